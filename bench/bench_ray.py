"""Job executor benchmark: `--executor local` vs `--executor ray`, small search jobs through gRPC.

`python -m bench.bench_ray` starts a server in this process (real gRPC on 127.0.0.1:0, real SQLite),
once with each executor, and for each concurrency C submits C small jobs at once (max-running-jobs C)
and watches them: the overhead per job is the time from StartJob to the first search step seen by
WatchJob, and jobs per hour is C over the time until the last of them finished. The Ray cluster is
`ray.cluster_utils.Cluster` on this machine: a head without CPUs and two nodes of C/2 logical CPUs
(two nodes on one box, sharing its cores), unless `--ray-address` names another. It writes the
"ray executor" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server.app import ServerHandle, make_server
from autohas_edge.server.config import ServerConfig
from bench.results import markdown_table, write_section

APP, PURPOSE, TASK = "bench.app", "personalization", "signals"
FAKE_ENGINE = "tests.server.fake_engine"
ROOT = Path(__file__).resolve().parent.parent


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata with a bearer token."""
    return (("authorization", f"Bearer {token}"),)


def seed_task(handle: ServerHandle, token: str) -> None:
    """A separable 1-D signal task with 600 examples of one consenting user."""
    channel = grpc.insecure_channel(handle.address)
    op, dev = pb_grpc.OperatorServiceStub(channel), pb_grpc.DeviceServiceStub(channel)
    task = pb.Task(
        task_id=TASK,
        app_ids=[APP],
        purpose=PURPOSE,
        input_shape=[1, 32],
        input_dtype=pb.DTYPE_FLOAT32,
        num_classes=3,
    )
    op.CreateTask(pb.CreateTaskRequest(task=task), metadata=bearer(token))
    device = dev.RegisterDevice(pb.RegisterDeviceRequest(app_id=APP, user_id="u")).device_token
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    dev.GrantConsent(grant, metadata=bearer(device))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(0, 0.3, (600, 1, 32)).astype("<f4")
    x[np.arange(600), 0, 8 * y + 4] += 3.0
    features = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes())
    batch = pb.ExampleBatch(batch_id="b0", task_id=TASK, labels=y.tolist(), features=features)
    dev.UploadExamples(iter([batch]), metadata=bearer(device))
    channel.close()


def run_job(op: pb_grpc.OperatorServiceStub, md: tuple, spec: pb.JobSpec) -> dict[str, float]:
    """Submit one job and watch it; seconds to its first search step and to its end, and its node."""
    t0 = time.perf_counter()
    job = op.StartJob(pb.StartJobRequest(spec=spec), metadata=md)
    first = float("nan")
    for event in op.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=md, timeout=1800):
        if first != first and event.stage == "search" and event.step >= 1:
            first = time.perf_counter() - t0
    final = op.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=md)
    if final.state != pb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ended {final.state}: {final.error}")
    return {"first_step_s": first, "total_s": time.perf_counter() - t0, "node": final.placement}


def measure(config: ServerConfig, concurrency: int, spec: pb.JobSpec) -> dict[str, object]:
    """C jobs at once on a fresh server with `config`."""
    handle = make_server(config.replace(max_running_jobs=concurrency))
    handle.start()
    try:
        seed_task(handle, config.operator_token)
        channel = grpc.insecure_channel(handle.address)
        op, md = pb_grpc.OperatorServiceStub(channel), bearer(config.operator_token)
        results: list[dict[str, float]] = []
        start = time.perf_counter()
        threads = [
            threading.Thread(target=lambda: results.append(run_job(op, md, spec)))
            for _ in range(concurrency)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        channel.close()
    finally:
        handle.stop(grace=1.0)
    if len(results) != concurrency:
        raise RuntimeError("a job failed (see the log above)")
    return {
        "first_step_s": statistics.median(r["first_step_s"] for r in results),
        "total_s": statistics.median(r["total_s"] for r in results),
        "jobs_per_hour": concurrency / wall * 3600,
        "nodes": len({r["node"] for r in results}),
    }


@contextlib.contextmanager
def local_cluster(cpus_per_node: int) -> Iterator[str]:
    """Two Ray nodes on this machine (and a head without CPUs); yields nothing to connect to."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": cpus_per_node, "object_store_memory": 100 * 2**20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "num_cpus": 0, "include_dashboard": False},
    )
    for _ in range(2):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, namespace="autohas")
    try:
        yield ""
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> int:
    """Run the benchmark and write its section of bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=20, help="search steps a job")
    parser.add_argument("--retrain-steps", type=int, default=20)
    parser.add_argument(
        "--ray-address", default="", help="an existing cluster (default: start one)"
    )
    parser.add_argument(
        "--engine",
        default=FAKE_ENGINE,
        help="the job engine: the tests' fake (steps of AUTOHAS_FAKE_STEP_S=0.05 s: the executor's "
        "own cost) or autohas_edge.server.engine (real searches)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    spec = pb.JobSpec(task_id=TASK, steps=args.steps, retrain_steps=args.retrain_steps, seed=0)
    os.environ.setdefault(
        "AUTOHAS_FAKE_STEP_S", "0.05"
    )  # the fake engine's step (forwarded to Ray)
    os.environ["PYTHONPATH"] = os.pathsep.join(  # Ray's workers import the engine module too
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        base = ServerConfig(
            data_dir=Path(tmp),
            operator_token=secrets.token_urlsafe(32),
            search_device="cpu",
            engine=args.engine,
        )
        node_cpus = max(1, (max(args.concurrency) + 1) // 2)
        cluster = (
            contextlib.nullcontext(args.ray_address)
            if args.ray_address
            else local_cluster(node_cpus)
        )
        for executor in ("local", "ray"):
            with cluster if executor == "ray" else contextlib.nullcontext(""):
                for c in args.concurrency:
                    config = base.replace(
                        data_dir=Path(tmp) / f"{executor}-{c}",
                        executor=executor,
                        ray_address=args.ray_address,
                    )
                    r = measure(config, c, spec)
                    print(executor, c, r, flush=True)
                    rows.append(
                        [
                            executor,
                            c,
                            f"{r['first_step_s']:.1f}",
                            f"{r['total_s']:.1f}",
                            f"{r['jobs_per_hour']:.0f}",
                            r["nodes"] if executor == "ray" else "",
                        ]
                    )
    headers = ["executor", "jobs at once", "submit to 1st step s (median)", "job s (median)"]
    table = markdown_table([*headers, "jobs / hour", "nodes used"], rows)
    print(table)
    if not args.no_write:
        load = os.getloadavg()[0]
        real = args.engine != FAKE_ENGINE
        command = "python -m bench.bench_ray " + " ".join(
            ["--concurrency", *map(str, args.concurrency), "--steps", str(args.steps)]
            + (["--engine", args.engine] if real else [])
        )
        what = (
            f"Small real searches ({args.steps} search + {args.retrain_steps} retraining steps"
            if real
            else f"Fake-engine jobs ({args.steps} steps of 0.05 s: what is measured is the executor"
        )
        body = (
            f"{what}, 600 examples) through gRPC; 1-minute load at the end "
            f"{load:.1f}. Ray: two nodes of {node_cpus} logical CPU(s) on this one box (a "
            f"`ray.cluster_utils.Cluster`), sharing its cores.\n\n{table}\n"
        )
        write_section(f"ray executor, {'real' if real else 'fake'} engine", command, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

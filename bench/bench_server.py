"""Server benchmark: upload throughput over loopback with 1 and 16 clients; GetJob latency during a search.

`python -m bench.bench_server` starts `autohas server` as its own process on 127.0.0.1:0 (as deployed),
drives it with client threads, and writes the "server" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from bench.results import markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent
APP, PURPOSE, TASK, SEARCH_TASK = "bench.app", "personalization", "upload", "search"
FEATURES = 256  # float32 features an example: 1 KiB
CLASSES = 4


@dataclass
class Server:
    """A server process and the operator's view of it."""

    process: subprocess.Popen[str]
    address: str
    token: str

    def md(self, token: str | None = None) -> tuple[tuple[str, str]]:
        """Call metadata with a bearer token (the operator's by default)."""
        return (("authorization", f"Bearer {token or self.token}"),)


def start_server(data_dir: Path) -> Server:
    """`autohas server --port 0` in its own process; returns once it listens."""
    token = secrets.token_urlsafe(32)
    command = [
        sys.executable,
        "-m",
        "autohas_edge.server.cli",
        "server",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--device",
        "cpu",
        # a throughput bench stores far more than any device's quota, from one address
        *("--device-quota-mb", "0", "--user-quota-mb", "0", "--app-quota-mb", "0"),
        *("--registrations-per-minute", "0"),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "AUTOHAS_OPERATOR_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    match = re.search(r"listening on (\S+) ", process.stdout.readline())  # type: ignore[union-attr]
    if match is None:
        process.kill()
        raise RuntimeError("the server did not start")
    return Server(process, match.group(1), token)


def batches(client: int, size: int, count: int, start: int) -> Iterator[pb.ExampleBatch]:
    """`count` batches of `size` random examples with ids unique per client."""
    rng = np.random.default_rng(client)
    x = rng.normal(size=(size, FEATURES)).astype("<f4")
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes())
    labels = (np.arange(size) % CLASSES).tolist()
    for i in range(start, start + count):
        yield pb.ExampleBatch(
            batch_id=f"c{client}-{i}", task_id=TASK, features=tensor, labels=labels
        )


def device(
    server: Server, channel: grpc.Channel, user: str
) -> tuple[pb_grpc.DeviceServiceStub, str]:
    """A registered device whose user consented."""
    stub = pb_grpc.DeviceServiceStub(channel)
    token = stub.RegisterDevice(pb.RegisterDeviceRequest(app_id=APP, user_id=user)).device_token
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    stub.GrantConsent(grant, metadata=server.md(token))
    return stub, token


def upload_run(
    server: Server, clients: int, seconds: float, batch: int, per_stream: int
) -> dict[str, float]:
    """Each client streams `per_stream` batches a call until time is up; counts acknowledged examples."""
    acked = [0] * clients
    channels = [grpc.insecure_channel(server.address) for _ in range(clients)]
    devices = [device(server, channels[c], f"u{clients}-{c}") for c in range(clients)]
    deadline = time.perf_counter() + seconds

    def work(c: int) -> None:
        stub, token = devices[c]
        calls = 0
        while time.perf_counter() < deadline:
            stream = batches(c, batch, per_stream, calls * per_stream)
            reply = stub.UploadExamples(stream, metadata=server.md(token))
            acked[c] += reply.examples_stored
            calls += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for ch in channels:
        ch.close()
    examples = sum(acked)
    return {
        "examples": examples,
        "seconds": elapsed,
        "examples_s": examples / elapsed,
        "mb_s": examples * FEATURES * 4 / elapsed / 1e6,
    }


def latencies(
    stub: pb_grpc.OperatorServiceStub, server: Server, job_id: str, seconds: float
) -> np.ndarray:
    """GetJob called back to back for `seconds`; returns the latencies in ms."""
    out, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=server.md())
        out.append((time.perf_counter() - t) * 1000)
    return np.array(out)


def search_task(server: Server, channel: grpc.Channel) -> None:
    """A separable 1-D signal task with 600 consented examples for the search to run on."""
    op = pb_grpc.OperatorServiceStub(channel)
    op.CreateTask(
        pb.CreateTaskRequest(
            task=pb.Task(
                task_id=SEARCH_TASK,
                app_ids=[APP],
                purpose=PURPOSE,
                input_shape=[1, 32],
                input_dtype=pb.DTYPE_FLOAT32,
                num_classes=3,
            )
        ),
        metadata=server.md(),
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(0, 0.3, (600, 1, 32)).astype("<f4")
    x[np.arange(600), 0, 8 * y + 4] += 3.0
    stub, token = device(server, channel, "searcher")
    features = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes())
    batch = pb.ExampleBatch(
        batch_id="s0", task_id=SEARCH_TASK, labels=y.tolist(), features=features
    )
    stub.UploadExamples(iter([batch]), metadata=server.md(token))


def job_latency(server: Server, seconds: float) -> list[list[object]]:
    """GetJob p50/p99 with no job running, then while a real search runs in its worker process."""
    channel = grpc.insecure_channel(server.address)
    op = pb_grpc.OperatorServiceStub(channel)
    search_task(server, channel)
    spec = pb.JobSpec(
        task_id=SEARCH_TASK, mode=pb.SEARCH_MODE_JOINT, steps=100_000, retrain_steps=1
    )
    job = op.StartJob(pb.StartJobRequest(spec=spec), metadata=server.md())
    rows = []
    idle = latencies(
        op, server, job.job_id, min(seconds, 3.0)
    )  # while the worker still imports torch
    while (
        op.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=server.md()).progress.stage
        != "search"
    ):
        time.sleep(0.2)
    busy = latencies(op, server, job.job_id, seconds)
    steps = op.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=server.md()).progress.step
    op.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=server.md())
    for label, ms in (("worker starting", idle), (f"search running (reached step {steps})", busy)):
        rows.append(
            [label, len(ms), f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}"]
        )
    channel.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    parser.add_argument("--batch", type=int, default=256, help="examples a batch (1 KiB each)")
    parser.add_argument("--per-stream", type=int, default=8, help="batches an UploadExamples call")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "var")
        try:
            with grpc.insecure_channel(server.address) as channel:
                pb_grpc.OperatorServiceStub(channel).CreateTask(
                    pb.CreateTaskRequest(
                        task=pb.Task(
                            task_id=TASK,
                            app_ids=[APP],
                            purpose=PURPOSE,
                            input_shape=[FEATURES],
                            input_dtype=pb.DTYPE_FLOAT32,
                            num_classes=CLASSES,
                        )
                    ),
                    metadata=server.md(),
                )
            uploads = [
                (c, upload_run(server, c, args.seconds, args.batch, args.per_stream))
                for c in (1, 16)
            ]
            latency = job_latency(server, args.seconds)
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=60)
    upload_rows = [
        [c, int(r["examples"]), f"{r['examples_s']:,.0f}", f"{r['mb_s']:.1f}"] for c, r in uploads
    ]
    body = (
        f"Server and clients on one machine over loopback (plaintext gRPC); server in its own process "
        f"(`autohas server`), clients are threads of the benchmark process; 1-minute load average at the "
        f"start {load:.1f}. Each example is {FEATURES} float32 (1 KiB); {args.batch} examples a batch, "
        f"{args.per_stream} batches an `UploadExamples` stream; each batch is committed to SQLite "
        f"(WAL, synchronous=FULL) before it counts. {args.seconds:g} s a measurement.\n\n"
        "### Upload throughput (acknowledged examples)\n\n"
        + markdown_table(["clients", "examples", "examples/s", "MB/s"], upload_rows)
        + "\n\n### GetJob latency while a search runs (one client, calls back to back)\n\n"
        + markdown_table(["when", "calls", "p50 ms", "p99 ms"], latency)
    )
    command = "python -m bench.bench_server " + " ".join(sys.argv[1:])
    write_section("server", command.strip(), body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

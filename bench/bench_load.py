"""Load benchmark: simulated devices upload and poll over loopback while a real search runs.

`python -m bench.bench_load [--devices 50] [--seconds 60]` starts `autohas server` as its own process on
127.0.0.1:0, seeds a task and starts a real (small) search on it, then runs each device as a thread with
its own channel for `--seconds`: a device loops {upload one batch; poll ListModels (sometimes GetTask);
sleep 0.2-0.6 s}. Deliberate rejections: 1 upload in 20 carries a NaN (INVALID_ARGUMENT), and every tenth
device never consents (FAILED_PRECONDITION); 1 upload in 20 is a retry of an earlier batch (a duplicate,
not an error). An operator thread polls GetJob (the job status call) every 100 ms. The server's resident
memory is sampled every second from /proc. Any other failure is an error: the exit code is 1 if there
was one. Writes the "load" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from bench.bench_server import Server, start_server
from bench.results import markdown_table, write_section

APP, PURPOSE, TASK = "bench.app", "personalization", "load"
SHAPE, CLASSES, BATCH = (
    (1, 32),
    3,
    32,
)  # a 1-D signal task; a device uploads 32 examples (4 KiB) a call
DELIBERATE = {("upload-nan", "INVALID_ARGUMENT"), ("upload-no-consent", "FAILED_PRECONDITION")}
MAX_LOOPS = 10_000  # a device's loop count is bounded whatever --seconds says


@dataclass
class Tally:
    """Latencies by call and outcomes by (call kind, status), shared by the client threads."""

    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    acked_examples: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, call: str, kind: str, fn: Callable[[], Any]) -> Any:
        """Run one RPC, recording its latency under `call` and its outcome under `kind`."""
        start = time.perf_counter()
        try:
            reply, code = fn(), "OK"
        except grpc.RpcError as e:
            reply, code = None, e.code().name  # type: ignore[attr-defined]
        with self.lock:
            self.latency_ms[call].append((time.perf_counter() - start) * 1000)
            self.outcomes[(kind, code)] += 1
        return reply


def batch(batch_id: str, rng: np.random.Generator, poison: bool = False) -> pb.ExampleBatch:
    """A batch of the load task (with one NaN when `poison`)."""
    x = rng.normal(size=(BATCH, *SHAPE)).astype("<f4")
    if poison:
        x[rng.integers(BATCH), 0, 0] = np.nan
    return pb.ExampleBatch(
        batch_id=batch_id,
        task_id=TASK,
        labels=rng.integers(0, CLASSES, BATCH).tolist(),
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes()),
    )


def seed_search(server: Server, channel: grpc.Channel) -> str:
    """Create the task, upload 600 separable examples of a consenting user, start a long real search."""
    op = pb_grpc.OperatorServiceStub(channel)
    task = pb.Task(
        task_id=TASK,
        app_ids=[APP],
        purpose=PURPOSE,
        input_shape=SHAPE,
        input_dtype=pb.DTYPE_FLOAT32,
        num_classes=CLASSES,
    )
    op.CreateTask(pb.CreateTaskRequest(task=task), metadata=server.md())
    device = pb_grpc.DeviceServiceStub(channel)
    md = server.md(
        device.RegisterDevice(pb.RegisterDeviceRequest(app_id=APP, user_id="seed")).device_token
    )
    device.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=md
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, 600)
    x = rng.normal(0, 0.3, (600, *SHAPE)).astype("<f4")
    x[np.arange(600), 0, 8 * y + 4] += 3.0
    seed = pb.ExampleBatch(
        batch_id="seed",
        task_id=TASK,
        labels=y.tolist(),
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes()),
    )
    device.UploadExamples(iter([seed]), metadata=md)
    spec = pb.JobSpec(task_id=TASK, mode=pb.SEARCH_MODE_JOINT, steps=100_000, retrain_steps=1)
    return str(op.StartJob(pb.StartJobRequest(spec=spec), metadata=server.md()).job_id)


def device_loop(server: Server, index: int, stop: threading.Event, tally: Tally) -> None:
    """One simulated device until `stop`: upload, poll, sleep."""
    rng = np.random.default_rng(1000 + index)
    consents = index % 10 != 9
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.DeviceServiceStub(channel)
        reply = stub.RegisterDevice(
            pb.RegisterDeviceRequest(app_id=APP, user_id=f"user{index}"), timeout=30
        )
        md = server.md(reply.device_token)
        if consents:
            stub.GrantConsent(
                pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"),
                metadata=md,
                timeout=30,
            )
        sent: list[pb.ExampleBatch] = []
        for loop in range(MAX_LOOPS):
            if stop.is_set():
                return
            one_upload(stub, md, rng, loop, index, sent, consents, tally)
            poll(tally, stub, md, get_task=rng.random() < 0.3)
            stop.wait(rng.uniform(0.2, 0.6))


def poll(tally: Tally, stub: pb_grpc.DeviceServiceStub, md: Any, get_task: bool) -> None:
    """What a device polls: its task's models (for a newer one), sometimes the task itself."""
    tally.timed(
        "ListModels",
        "poll",
        lambda: stub.ListModels(pb.ListModelsRequest(task_id=TASK), metadata=md, timeout=30),
    )
    if get_task:
        tally.timed(
            "GetTask",
            "poll",
            lambda: stub.GetTask(pb.GetTaskRequest(task_id=TASK), metadata=md, timeout=30),
        )


def one_upload(
    stub: pb_grpc.DeviceServiceStub,
    md: Any,
    rng: np.random.Generator,
    loop: int,
    index: int,
    sent: list[pb.ExampleBatch],
    consents: bool,
    tally: Tally,
) -> None:
    """A new batch, a poisoned one (1 in 20) or a retry of an earlier one (1 in 20)."""
    draw = rng.random()
    if not consents:
        kind, message = "upload-no-consent", batch(f"d{index}-{loop}", rng)
    elif draw < 0.05:
        kind, message = "upload-nan", batch(f"d{index}-{loop}", rng, poison=True)
    elif draw < 0.10 and sent:
        kind, message = "upload-retry", sent[int(rng.integers(len(sent)))]
    else:
        kind, message = "upload", batch(f"d{index}-{loop}", rng)
    reply = tally.timed(
        "UploadExamples",
        kind,
        lambda: stub.UploadExamples(iter([message]), metadata=md, timeout=30),
    )
    if reply is not None:
        with tally.lock:
            tally.acked_examples += reply.examples_stored
        if kind == "upload":
            sent.append(message)


def poll_job(server: Server, job_id: str, stop: threading.Event, tally: Tally) -> list[int]:
    """GetJob every 100 ms until `stop`; returns the search steps seen."""
    steps = []
    with grpc.insecure_channel(server.address) as channel:
        op = pb_grpc.OperatorServiceStub(channel)
        while not stop.wait(0.1):
            job = tally.timed(
                "GetJob",
                "status",
                lambda: op.GetJob(
                    pb.GetJobRequest(job_id=job_id), metadata=server.md(), timeout=30
                ),
            )
            if job is not None:
                steps.append(job.progress.step)
    return steps


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return kb / 1024


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    """(seconds since start, RSS MB) of the server process every second until `stop`."""
    start = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - start, rss_mb(pid)))


def wait_for_search(server: Server, job_id: str, timeout: float = 600) -> None:
    """Wait until the job's worker is searching (torch imported, data loaded)."""
    with grpc.insecure_channel(server.address) as channel:
        op = pb_grpc.OperatorServiceStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = op.GetJob(pb.GetJobRequest(job_id=job_id), metadata=server.md(), timeout=30)
            if job.progress.stage == "search" or job.state not in (
                pb.JOB_STATE_RUNNING,
                pb.JOB_STATE_QUEUED,
            ):
                return
            time.sleep(0.5)
    raise RuntimeError("the search did not start")


def run_load(
    server: Server, job_id: str, devices: int, seconds: float
) -> tuple[Tally, list[int], list[Any]]:
    """Devices and the status poller for `seconds`; returns the tally, steps seen and RSS samples."""
    tally, stop, rss_stop = Tally(), threading.Event(), threading.Event()
    rss: list[tuple[float, float]] = []
    sampler = threading.Thread(
        target=sample_rss, args=(server.process.pid, rss_stop, rss), daemon=True
    )
    sampler.start()
    threads = [
        threading.Thread(target=device_loop, args=(server, i, stop, tally), daemon=True)
        for i in range(devices)
    ]
    steps: list[int] = []
    poller = threading.Thread(
        target=lambda: steps.extend(poll_job(server, job_id, stop, tally)), daemon=True
    )
    for thread in (*threads, poller):
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in (*threads, poller):
        thread.join(timeout=60)
    rss_stop.set()
    sampler.join()
    return tally, steps, rss


def stored_examples(data_dir: Path) -> int:
    """Examples of the load task in the server's SQLite file (read-only)."""
    conn = sqlite3.connect(f"file:{data_dir / 'autohas.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        return int(
            conn.execute(
                "SELECT COALESCE(SUM(count), 0) FROM examples WHERE task_id = ?", (TASK,)
            ).fetchone()[0]
        )
    finally:
        conn.close()


def percentiles(values: list[float]) -> list[str]:
    a = np.asarray(values)
    return [f"{np.percentile(a, q):.1f}" for q in (50, 95, 99)] + [f"{a.max():.1f}"]


def rss_summary(samples: list[tuple[float, float]]) -> tuple[str, bool]:
    """A line on the server's memory over the run, and whether it stayed flat."""
    t, mb = np.array([s[0] for s in samples]), np.array([s[1] for s in samples])
    first, last = mb[: max(1, len(mb) // 6)].mean(), mb[-max(1, len(mb) // 6) :].mean()
    slope = float(np.polyfit(t, mb, 1)[0]) * 60 if len(t) > 1 else 0.0
    flat = last <= first * 1.10 + 5  # within 10% (+5 MB of allocator noise) of where it started
    every = ", ".join(f"{v:.0f}" for v in mb[:: max(1, len(mb) // 12)])
    line = (
        f"Server RSS (MB, sampled every second): first sixth of the run {first:.1f}, last sixth "
        f"{last:.1f}, max {mb.max():.1f}, linear trend {slope:+.1f} MB/min -> "
        f"{'flat' if flat else 'GROWING'}. "
        f"Samples: {every}."
    )
    return line, flat


def verdict(kind: str, code: str) -> str:
    """How an outcome counts: ok, a deliberate rejection, or an error."""
    if code == "OK":
        return "ok"
    return "deliberate" if (kind, code) in DELIBERATE else "**error**"


def report(
    args: argparse.Namespace,
    tally: Tally,
    steps: list[int],
    rss: list[Any],
    acked: int,
    stored: int,
    load: float,
) -> tuple[str, int]:
    """The RESULTS.md body and the number of errors (failures that were not deliberate)."""
    errors = {k: n for k, n in tally.outcomes.items() if k[1] != "OK" and k not in DELIBERATE}
    rows = [[call, len(ms), *percentiles(ms)] for call, ms in sorted(tally.latency_ms.items())]
    outcomes = sorted(tally.outcomes.items())
    outcome_rows = [[kind, code, n, verdict(kind, code)] for (kind, code), n in outcomes]
    rss_line, flat = rss_summary(rss)
    calls = sum(tally.outcomes.values())
    body = (
        f"{args.devices} simulated devices (threads of the benchmark process, one channel each) against "
        f"`autohas server` in its own process on 127.0.0.1, for {args.seconds:g} s, while a real search "
        f"(joint mode, 600 examples of a 1-D signal task) ran in the server's worker process "
        f"(search step {min(steps, default=0)} -> {max(steps, default=0)} during the run). Each device "
        f"loops: upload 32 examples, poll ListModels (and GetTask 3 times in 10), sleep 0.2-0.6 s. "
        f"1-minute load average at the start: {load:.1f} (a shared machine).\n\n"
        f"**{calls} calls, {sum(errors.values())} errors** (failures other than the deliberate rejections). "
        f"Acknowledged examples {acked}; stored for the task after the run {stored} (= acknowledged + 600 "
        f"seeded: {'yes' if stored == acked + 600 else 'NO'}).\n\n"
        "### Latency (ms, measured by the clients)\n\n"
        + markdown_table(["call", "calls", "p50", "p95", "p99", "max"], rows)
        + "\n\nGetJob is the operator's job status call, polled every 100 ms; ListModels and GetTask are the "
        "devices' polls.\n\n### Outcomes\n\n"
        + markdown_table(["kind", "status", "calls", ""], outcome_rows)
        + f"\n\n### Memory\n\n{rss_line}\n"
    )
    return body, sum(errors.values()) + (0 if flat else 1) + (0 if stored == acked + 600 else 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=50, help="simulated devices (threads)")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="length of the load (at most 600)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print, do not update bench/RESULTS.md"
    )
    args = parser.parse_args()
    args.seconds = min(args.seconds, 600.0)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "var"
        server = start_server(data_dir)
        try:
            with grpc.insecure_channel(server.address) as channel:
                job_id = seed_search(server, channel)
            wait_for_search(server, job_id)
            tally, steps, rss = run_load(server, job_id, args.devices, args.seconds)
            stored = stored_examples(data_dir)
        finally:
            server.process.terminate()
            server.process.wait(timeout=60)
    body, errors = report(args, tally, steps, rss, tally.acked_examples, stored, load)
    if not args.no_write:
        write_section("load", " ".join(["python -m bench.bench_load", *sys.argv[1:]]), body)
    print(body)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the attacks of issue 17 (server side) against real servers on loopback, and print results.

Run it on the code under test (`python -m bench.bench_attacks`), or on an older tree to get the
"before" column: `git archive <commit> | tar -x -C old`, then run this file with `PYTHONPATH` naming a
directory whose `autohas_edge/` links to that tree's packages (see bench/RESULTS.md). Each attack feature-
detects what the code offers, so one script serves both. The full-disk attack mounts a 16 MiB tmpfs and
needs root (it is skipped, saying so, otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server.app import make_server
from autohas_edge.server.config import ServerConfig

APP, OTHER_APP, TASK, PURPOSE = "com.example.app", "com.example.other", "t", "p"
FAKE_ENGINE = "tests.server.fake_engine"
Attack = Callable[[Path], str]
ATTACKS: dict[str, Attack] = {}


def attack(name: str) -> Callable[[Attack], Attack]:
    """Register an attack under a short name."""

    def register(fn: Attack) -> Attack:
        ATTACKS[name] = fn
        return fn

    return register


class Server:
    """An in-process server on 127.0.0.1:0 with stubs."""

    def __init__(self, data_dir: Path, **config: Any) -> None:
        self.token = secrets.token_urlsafe(32)
        settings = {"engine": FAKE_ENGINE, "search_device": "cpu", **config}
        self.config = ServerConfig(data_dir=data_dir, operator_token=self.token, **settings)
        self.handle = make_server(self.config)
        self.handle.start()
        self.channel = grpc.insecure_channel(self.handle.address)
        self.device = pb_grpc.DeviceServiceStub(self.channel)
        self.operator = pb_grpc.OperatorServiceStub(self.channel)
        self.op_md = (("authorization", f"Bearer {self.token}"),)

    def task(self, task_id: str = TASK, app: str = APP, features: int = 16, **extra: Any) -> None:
        """Create a float32 [1, features] task with 3 classes."""
        task = pb.Task(
            task_id=task_id,
            app_ids=[app],
            purpose=PURPOSE,
            input_shape=[1, features],
            input_dtype=pb.DTYPE_FLOAT32,
            num_classes=3,
            **extra,
        )
        self.operator.CreateTask(pb.CreateTaskRequest(task=task), metadata=self.op_md)

    def user(self, user: str, app: str = APP, ticket: str = "") -> tuple[tuple[str, str], ...]:
        """Register a consenting device; returns its call metadata."""
        request = pb.RegisterDeviceRequest(app_id=app, user_id=user, enrollment_ticket=ticket)
        md = (("authorization", f"Bearer {self.device.RegisterDevice(request).device_token}"),)
        grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
        self.device.GrantConsent(grant, metadata=md)
        return md

    def stop(self) -> None:
        """Close the channel and stop the server."""
        self.channel.close()
        self.handle.stop(grace=0.5)


def batch(batch_id: str, n: int = 8, features: int = 16, task: str = TASK) -> pb.ExampleBatch:
    """A valid batch of n random examples."""
    x = np.random.default_rng(len(batch_id)).normal(size=(n, 1, features)).astype("<f4")
    return pb.ExampleBatch(
        batch_id=batch_id,
        task_id=task,
        labels=(np.arange(n) % 3).tolist(),
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes()),
    )


def status(call: Callable[[], Any]) -> str:
    """ "OK", or the status code and the first words of its message."""
    try:
        reply = call()
        if hasattr(reply, "__next__"):
            list(reply)
        return "OK"
    except grpc.RpcError as e:
        return f"{e.code().name} ({str(e.details())[:90]})"  # type: ignore[attr-defined]


def job(s: Server, steps: int = 2) -> str:
    spec = pb.JobSpec(task_id=TASK, steps=steps)
    return str(s.operator.StartJob(pb.StartJobRequest(spec=spec), metadata=s.op_md).job_id)


def state(s: Server, job_id: str) -> str:
    got = s.operator.GetJob(pb.GetJobRequest(job_id=job_id), metadata=s.op_md)
    return str(pb.JobState.Name(got.state)).removeprefix("JOB_STATE_")


def wait_state(s: Server, job_id: str, states: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state(s, job_id) not in states:
        time.sleep(0.1)
    return state(s, job_id)


# -- the attacks -----------------------------------------------------------------------------------


@attack("registration flood (3000 RegisterDevice, no credential)")
def registration_flood(tmp: Path) -> str:
    s = Server(tmp / "d")
    codes: Counter[str] = Counter()
    start = time.perf_counter()
    for i in range(3000):
        request = pb.RegisterDeviceRequest(app_id=APP, user_id=f"u{i}")
        codes[status(lambda r=request: s.device.RegisterDevice(r)).split(" ")[0]] += 1
    seconds = time.perf_counter() - start
    s.stop()
    return f"{codes['OK']} registered in {seconds:.1f} s; " + ", ".join(
        f"{k} {v}" for k, v in codes.items() if k != "OK"
    )


@attack("one self-registered device uploads 96 MiB")
def storage_fill(tmp: Path) -> str:
    s = Server(tmp / "d")
    s.task(features=256)
    md = s.user("mallory")
    stored, start, outcome = 0, time.perf_counter(), "all accepted"
    for i in range(96):  # 1 MiB batches
        b = batch(f"b{i}", n=1024, features=256)
        got = status(lambda b=b: s.device.UploadExamples(iter([b]), metadata=md))
        if got != "OK":
            outcome = got
            break
        stored += 1
    seconds = time.perf_counter() - start
    s.stop()
    return f"{stored} MiB stored in {seconds:.1f} s; then {outcome}"


@attack("1000 wrong operator tokens, then the right one")
def token_guessing(tmp: Path) -> str:
    s = Server(tmp / "d")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    server_log = logging.getLogger("autohas_edge.server")
    server_log.addHandler(handler)
    server_log.setLevel(logging.WARNING)
    server_log.propagate = False
    codes: Counter[str] = Counter()
    start = time.perf_counter()
    for _ in range(1000):
        md = (("authorization", f"Bearer {secrets.token_urlsafe(32)}"),)
        codes[
            status(lambda md=md: s.operator.ListTasks(pb.ListTasksRequest(), metadata=md))[:16]
        ] += 1
    rate = 1000 / (time.perf_counter() - start)
    right = status(lambda: s.operator.ListTasks(pb.ListTasksRequest(), metadata=s.op_md))
    server_log.removeHandler(handler)
    server_log.setLevel(logging.NOTSET)
    server_log.propagate = True
    s.stop()
    logged = sum("auth" in r.getMessage() for r in records)
    tally = ", ".join(f"{k.split(' ')[0]} {v}" for k, v in codes.items())
    return f"{tally} at {rate:.0f}/s; log lines: {logged}; right token then: {right.split(' ')[0]}"


@attack("operator token 'a' * 16")
def weak_token(tmp: Path) -> str:
    try:
        ServerConfig(data_dir=tmp / "d", operator_token="a" * 16)
    except ValueError as e:
        return f"refused: {str(e)[:70]}"
    return "accepted"


@attack("`autohas server --host 0.0.0.0`, no TLS, no enrollment keys")
def exposed(tmp: Path) -> str:
    env = {**os.environ, "AUTOHAS_OPERATOR_TOKEN": secrets.token_urlsafe(32)}
    command = [sys.executable, "-m", "autohas_edge.server.cli", "server", "--host", "0.0.0.0"]
    command += ["--port", "0", "--data-dir", str(tmp / "d")]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = process.stdout.readline() if process.stdout else ""
    if "listening" in line:
        process.terminate()
        process.wait(30)
        return "serves: " + line.split(" (")[0].replace("autohas server ", "")
    process.wait(30)
    err = (process.stderr.read() if process.stderr else "").strip().splitlines()
    return f"exit {process.returncode}: {err[-1][:80] if err else ''}"


@attack("upload with shape [0, 2**62]")
def huge_shape(tmp: Path) -> str:
    s = Server(tmp / "d")
    s.task()
    md = s.user("alice")
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[0, 2**62], data=b"")
    bad = pb.ExampleBatch(batch_id="b", task_id=TASK, features=tensor)
    got = status(lambda: s.device.UploadExamples(iter([bad]), metadata=md))
    s.stop()
    return got


def _stalled(release: threading.Event) -> Iterator[pb.ExampleBatch]:
    yield batch("first")
    release.wait()


@attack("24 stalled uploads from one device, then another device uploads")
def stream_hog(tmp: Path) -> str:
    s = Server(tmp / "d", stream_idle_timeout_s=30.0)
    s.task()
    hog, other = s.user("hog"), s.user("other")
    release = threading.Event()
    calls = [s.device.UploadExamples.future(_stalled(release), metadata=hog) for _ in range(24)]
    time.sleep(1.0)
    held = sum(not c.done() for c in calls)
    got = status(lambda: s.device.UploadExamples(iter([batch("x")]), metadata=other, timeout=5))
    release.set()
    s.stop()
    return f"the hog holds {held} streams; the other device's upload: {got[:60]}"


@attack("another app's task vs an unknown task (GetTask)")
def oracle(tmp: Path) -> str:
    s = Server(tmp / "d")
    s.task("theirs", app=OTHER_APP)
    md = s.user("alice")
    theirs = status(lambda: s.device.GetTask(pb.GetTaskRequest(task_id="theirs"), metadata=md))
    unknown = status(lambda: s.device.GetTask(pb.GetTaskRequest(task_id="nope"), metadata=md))
    s.stop()
    return f"theirs: {theirs.split(' ')[0]}; unknown: {unknown.split(' ')[0]}"


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}" if path.exists() else "-"


@attack("file modes after one job (default umask 022)")
def permissions(tmp: Path) -> str:
    old = os.umask(0o022)
    try:
        s = Server(tmp / "d")
        s.task()
        md = s.user("alice")
        s.device.UploadExamples(iter([batch("b")]), metadata=md)
        job_id = job(s)
        wait_state(s, job_id, ("SUCCEEDED", "FAILED"), 30)
        d, jd = s.config.data_dir, s.config.data_dir / "jobs" / job_id
        files = {
            "wal": d / "autohas.sqlite3-wal",
            "shm": d / "autohas.sqlite3-shm",
            "jobs/": d / "jobs",
            "models/": d / "models",
            "run/": jd / "run",
            "worker.log": jd / "worker.log",
        }
        modes = ", ".join(f"{k} {_mode(v)}" for k, v in files.items())  # while it runs
        s.stop()
    finally:
        os.umask(old)
    return modes


@attack("a shared 1777 directory as the data dir")
def shared_dir(tmp: Path) -> str:
    shared = tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    try:
        s = Server(shared)
    except ValueError as e:
        return f"refused: {str(e)[:60]}; mode stays {_mode(shared)}"
    s.stop()
    return f"accepted; mode now {_mode(shared)}"


@attack("revoke a device token")
def revoke_device(tmp: Path) -> str:
    if not hasattr(pb, "RevokeDeviceRequest"):
        return "no RPC for it"
    s = Server(tmp / "d")
    md = s.user("alice")
    s.device.RevokeDevice(pb.RevokeDeviceRequest(), metadata=md)
    after = status(lambda: s.device.ListConsents(pb.ListConsentsRequest(), metadata=md))
    s.stop()
    return f"revoked; the token then: {after.split(' ')[0]}"


@attack("one enrollment ticket, 5 registrations")
def ticket_reuse(tmp: Path) -> str:
    from autohas_edge.server.enrollment import mint_ticket

    secret = secrets.token_urlsafe(32)
    keys = tmp / "keys.json"
    keys.write_text(json.dumps({APP: secret}))
    os.chmod(keys, 0o600)
    s = Server(tmp / "d", enrollment_keys=keys)
    ticket = mint_ticket(secret, APP, "alice")
    request = pb.RegisterDeviceRequest(app_id=APP, user_id="alice", enrollment_ticket=ticket)
    codes = Counter(
        status(lambda: s.device.RegisterDevice(request)).split(" ")[0] for _ in range(5)
    )
    s.stop()
    return ", ".join(f"{k} {v}" for k, v in codes.items())


@attack("a job over one user's data (server asked for a cohort of 3)")
def single_user_job(tmp: Path) -> str:
    try:
        s = Server(tmp / "d", min_cohort_users=3)
    except TypeError:
        s, note = Server(tmp / "d"), " (no cohort setting exists)"
    else:
        note = ""
    s.task()
    md = s.user("alice")
    s.device.UploadExamples(iter([batch("b")]), metadata=md)
    got = status(lambda: job(s))
    s.stop()
    return got + note


@attack("synthetic reference inputs over data with a constant feature 42.0")
def reference_copy(tmp: Path) -> str:
    from autohas_edge.export.bundle import reference_inputs

    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    x[:, 2] = 42.0
    ref = reference_inputs("synthetic", x, x)
    copied = int(np.sum(ref[:, 2] == np.float32(42.0)))
    return f"{copied} of {len(ref)} reference rows carry 42.0 exactly"


# -- full disk (root: a 16 MiB tmpfs) ----------------------------------------------------------------


def _fill(root: Path) -> None:
    with open(root / ".filler", "ab", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass


@attack("full disk (16 MiB tmpfs): upload, a queued job, the scheduler, a later job, health")
def full_disk(tmp: Path) -> str:
    root = tmp / "disk"
    root.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
        return "skipped (needs root to mount a tmpfs)"
    os.environ["AUTOHAS_FAKE_STEP_S"] = "0.05"
    try:
        s = Server(root / "d", max_running_jobs=1)
        s.task()
        md = s.user("alice")
        s.device.UploadExamples(iter([batch("b0", n=12000)]), metadata=md)
        first = job(s, steps=100000)
        wait_state(s, first, ("RUNNING",), 30)
        second = job(s)
        _fill(root)
        upload = status(lambda: s.device.UploadExamples(iter([batch("b1", n=20000)]), metadata=md))
        s.operator.CancelJob(pb.CancelJobRequest(job_id=first), metadata=s.op_md)
        time.sleep(3)
        (root / ".filler").unlink()
        third = job(s)
        third_state = wait_state(s, third, ("SUCCEEDED", "FAILED"), 20)
        second_state = state(s, second)
        health = _health(s)
        s.stop()
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
    return (
        f"upload: {upload[:70]}; queued job: {second_state}; job after freeing: {third_state}; "
        f"health: {health}"
    )


def _health(s: Server) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reply = health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@attack("a stale snapshot temp file in jobs/<id>/, then its user revokes")
def stale_temp(tmp: Path) -> str:
    s = Server(tmp / "d")
    s.task()
    md = s.user("alice")
    s.device.UploadExamples(iter([batch("b")]), metadata=md)
    job_id = job(s)
    wait_state(s, job_id, ("SUCCEEDED",), 30)
    stale = s.config.data_dir / "jobs" / job_id / ".dataset.npz.abc123.tmp"
    stale.write_bytes(b"alice's rows")
    s.device.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=md)
    kept = stale.exists()
    s.stop()
    return "the temp file is kept" if kept else "the temp file is deleted"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only attacks whose name contains these")
    parser.add_argument("--json", type=Path, help="also write {attack: result} here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # results, not the servers' logs
    results = {}
    for name, run in ATTACKS.items():
        if args.only and not any(word in name for word in args.only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                results[name] = run(Path(tmp))
            except Exception as e:  # an attack that breaks the code under test is a result too
                results[name] = f"error: {type(e).__name__}: {str(e)[:100]}"
        print(f"{name}: {results[name]}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

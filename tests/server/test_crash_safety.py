"""SIGKILL a real `autohas server` process mid-upload and mid-search, restart it on the same data dir.

Every acknowledged batch must still be there, every stored batch must be whole (no half-written rows), a
killed server must leave no search process behind, and the search must resume from its checkpoint.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    FAKE_ENGINE,
    INPUT_SHAPE,
    NUM_CLASSES,
    TASK_ID,
    ServerProcess,
    bearer,
    seed_process,
    wait_gone,
)
from tests.server import stored

StartProcess = Callable[..., ServerProcess]


def random_batch(batch_id: str, rng: np.random.Generator) -> pb.ExampleBatch:
    """A valid batch of 1 to 4000 examples (up to 256 KiB: a kill can land inside a large commit)."""
    n = int(rng.choice([1, 7, 64, 4000], p=[0.3, 0.3, 0.3, 0.1]))
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype("<f4")
    labels = rng.integers(0, NUM_CLASSES, n).tolist()
    return pb.ExampleBatch(
        batch_id=batch_id,
        task_id=TASK_ID,
        labels=labels,
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes()),
    )


class Uploader(threading.Thread):
    """One device streaming batches (3 a call) until its calls fail; records what it sent and what was
    acknowledged."""

    def __init__(self, server: ServerProcess, token: str, prefix: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.stub, self.md, self.prefix = server.device, bearer(token), prefix
        self.rng = np.random.default_rng(seed)
        self.sent: dict[str, pb.ExampleBatch] = {}
        self.acked: set[str] = set()

    def run(self) -> None:
        for call in range(10_000):
            stream = [random_batch(f"{self.prefix}-{call}-{k}", self.rng) for k in range(3)]
            self.sent.update((b.batch_id, b) for b in stream)
            try:
                reply = self.stub.UploadExamples(iter(stream), metadata=self.md, timeout=30)
            except (grpc.RpcError, ValueError):  # ValueError: the test closed the channel
                return  # the server is gone
            self.acked.update(reply.stored_batch_ids, reply.duplicate_batch_ids)


def upload_then_kill(server: ServerProcess, tokens: dict[str, str], cycle: int) -> list[Uploader]:
    """Four devices upload concurrently; SIGKILL the server at a random moment once some batches are acked."""
    uploaders = [
        Uploader(server, token, f"{user}-c{cycle}", seed=100 * cycle + i)
        for i, (user, token) in enumerate(tokens.items())
    ]
    for uploader in uploaders:
        uploader.start()
    deadline = time.monotonic() + 60
    while sum(len(u.acked) for u in uploaders) < 12 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.5))
    server.kill()
    for uploader in uploaders:
        uploader.join(timeout=30)
    assert sum(len(u.acked) for u in uploaders) >= 12, "the uploads never got going"
    return uploaders


def check_on_disk(data_dir: Path, uploaders: list[Uploader]) -> None:
    """Every acked batch is stored with its exact content; every stored batch is whole and was sent."""
    assert stored.integrity(data_dir) == "ok"
    sent = {bid: b for u in uploaders for bid, b in u.sent.items()}
    rows = {row.batch_id: row for row in stored.stored_rows(data_dir)}
    for row in rows.values():
        assert stored.malformed(row, NUM_CLASSES) == "", row.batch_id
        assert row.batch_id in sent and stored.same_content(row, sent[row.batch_id]), row.batch_id
    missing = {bid for u in uploaders for bid in u.acked} - set(rows)
    assert not missing, f"acknowledged batches lost: {sorted(missing)[:5]}"


def resend_everything(
    server: ServerProcess, tokens: dict[str, str], uploaders: list[Uploader]
) -> None:
    """A retry of every batch ever sent: acked ones are duplicates, none conflicts, all end up stored."""
    for user, uploader in zip(tokens, uploaders, strict=True):
        batches = list(uploader.sent.values())
        reply = server.device.UploadExamples(
            iter(batches), metadata=bearer(tokens[user]), timeout=60
        )
        assert uploader.acked <= set(reply.duplicate_batch_ids)
        assert set(reply.stored_batch_ids) | set(reply.duplicate_batch_ids) == set(uploader.sent)


def test_sigkill_during_uploads_loses_no_acknowledged_batch(
    tmp_path: Path, server_process: StartProcess
) -> None:
    data_dir, token = tmp_path / "var", secrets.token_urlsafe(32)
    server = server_process(data_dir, token)
    tokens = seed_process(server)
    every: list[Uploader] = []
    for cycle in range(2):  # kill, restart, upload more, kill again
        uploaders = upload_then_kill(server, tokens, cycle)
        every += uploaders
        check_on_disk(data_dir, every)
        server = server_process(data_dir, token)
    per_user = {user: [u for u in every if u.prefix.startswith(f"{user}-")] for user in tokens}
    for cycle in range(2):
        resend_everything(server, tokens, [per_user[user][cycle] for user in tokens])
    total = sum(len(b.labels) for u in every for b in u.sent.values())
    count = sum(row.count for row in stored.stored_rows(data_dir))
    assert count == total
    check_on_disk(data_dir, every)


# -- searches --------------------------------------------------------------------------------------------


def seed_examples(server: ServerProcess, n: int = 120) -> None:
    """The default task with `n` examples of one consenting device."""
    tokens = seed_process(server)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, *INPUT_SHAPE)).astype("<f4")
    y = np.arange(n) % NUM_CLASSES
    x[np.arange(n), 0, 4 * y] += 3.0  # separable, so a real search has something to find
    batch = pb.ExampleBatch(
        batch_id="b0",
        task_id=TASK_ID,
        labels=y.tolist(),
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=x.shape, data=x.tobytes()),
    )
    server.device.UploadExamples(iter([batch]), metadata=bearer(tokens["u0"]), timeout=30)


def start_job(server: ServerProcess, **spec: object) -> str:
    request = pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, **spec))
    return str(server.operator.StartJob(request, metadata=server.op_md).job_id)


def get_job(server: ServerProcess, job_id: str) -> pb.Job:
    return server.operator.GetJob(
        pb.GetJobRequest(job_id=job_id), metadata=server.op_md, timeout=10
    )


def wait_for_step(server: ServerProcess, job_id: str, step: int, timeout: float) -> int:
    """Poll until the job's search reached `step`; returns the step seen."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(server, job_id)
        assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), job.error
        if job.progress.stage == "search" and job.progress.step >= step:
            return int(job.progress.step)
        assert time.monotonic() < deadline, f"the search did not reach step {step}"
        time.sleep(0.05)


def kill_mid_search(server: ServerProcess) -> None:
    """SIGKILL the server; its job worker must exit by itself (no orphaned search keeps running)."""
    workers = server.children()
    assert workers, "the job runs in no child process"
    server.kill()
    assert wait_gone(workers) == [], "a search process outlived its killed server"


def watch(server: ServerProcess, job_id: str, timeout: float) -> list[pb.JobProgress]:
    request = pb.WatchJobRequest(job_id=job_id)
    return list(server.operator.WatchJob(request, metadata=server.op_md, timeout=timeout))


def test_sigkill_mid_search_resumes_from_the_checkpoint(
    tmp_path: Path, server_process: StartProcess
) -> None:
    data_dir, token = tmp_path / "var", secrets.token_urlsafe(32)
    args, env = ("--engine", FAKE_ENGINE), {"AUTOHAS_FAKE_STEP_S": "0.05"}
    server = server_process(data_dir, token, *args, env=env)
    seed_examples(server)
    job_id = start_job(server, steps=80)
    seen = wait_for_step(server, job_id, 10, timeout=60)
    kill_mid_search(server)
    server = server_process(data_dir, token, *args, env=env)
    assert watch(server, job_id, timeout=60)[-1].state == pb.JOB_STATE_SUCCEEDED
    result = json.loads((data_dir / "jobs" / job_id / "run" / "result.json").read_text())
    assert seen - 1 <= result["resumed_from"] < 80  # the fake engine checkpoints every step
    audit = server.operator.GetJobAudit(pb.GetJobRequest(job_id=job_id), metadata=server.op_md)
    assert audit.total_examples == 120  # the first start's snapshot, not a new one


@pytest.mark.slow
def test_sigkill_mid_search_resumes_on_the_real_engine(
    tmp_path: Path, server_process: StartProcess
) -> None:
    """The real engine: the server picks a checkpoint interval for a short job (1 step for 8 steps)."""
    data_dir, token = tmp_path / "var", secrets.token_urlsafe(32)
    server = server_process(data_dir, token)
    seed_examples(server)
    job_id = start_job(server, mode=pb.SEARCH_MODE_NAS, steps=8, retrain_steps=2, seed=1)
    seen = wait_for_step(server, job_id, 3, timeout=300)
    run_dir = data_dir / "jobs" / job_id / "run"
    assert (run_dir / "search.pt").exists(), "no checkpoint after 3 steps"
    kill_mid_search(server)
    server = server_process(data_dir, token)
    events = watch(server, job_id, timeout=600)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    # the first event replays the progress the store had (saved every few steps); the resumed worker's
    # events follow its "load"
    restarted = [e.stage for e in events].index("load")
    first_search = next(e for e in events[restarted:] if e.stage == "search")
    assert first_search.step >= seen  # resumed at the checkpoint (step >= seen - 1), not at step 1
    result = json.loads((run_dir / "result.json").read_text())
    assert result["search_steps"] == 8 and result["config"]["checkpoint_every"] == 1

"""Revoking consent also removes the user's rows from stored job snapshots (policy: server.jobs.retention).

Finished jobs: at once. Running jobs: when their worker exits, or at the next start if the server died.
A snapshot left empty is deleted and its job can no longer be exported (or resumed), with a clear reason.
The database's WAL does not keep a revoked user's examples either.
"""

from __future__ import annotations

import json
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    APP_ID,
    FAKE_ENGINE,
    PURPOSE,
    TASK_ID,
    Device,
    RunningServer,
    ServerProcess,
    bearer,
    example_batch,
    seed_process,
)

Owners = list[tuple[str, str]]


def grant(device: Device) -> None:
    device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
    )


def revoke(device: Device) -> int:
    reply = device.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=device.md)
    return int(reply.examples_deleted)


def two_users(s: RunningServer) -> tuple[Device, Device]:
    """alice (5 examples) and bob (7 examples) consent and upload to the default task."""
    s.create_task()
    alice, bob = s.register(user_id="alice"), s.register(user_id="bob")
    for device, n, seed in ((alice, 5, 1), (bob, 7, 2)):
        grant(device)
        device.stub.UploadExamples(
            iter([example_batch(f"{device.user_id}-0", n=n, seed=seed)]), metadata=device.md
        )
    return alice, bob


def snapshot(job_dir: Path) -> tuple[np.ndarray, Owners]:
    """A snapshot's features and each row's (app, user), read straight from the file."""
    with np.load(job_dir / "dataset.npz", allow_pickle=False) as data:
        apps, users = data["owner_app"].tolist(), data["owner_user"].tolist()
        return data["x"], [(apps[i], users[i]) for i in data["row_owner"].tolist()]


def run_job(s: RunningServer, **spec: object) -> str:
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, **spec)), metadata=s.op_md
    )
    return str(job.job_id)


def finish(s: RunningServer, job_id: str) -> pb.JobProgress:
    request = pb.WatchJobRequest(job_id=job_id)
    return list(s.operator.WatchJob(request, metadata=s.op_md, timeout=60))[-1]


def bobs_features() -> np.ndarray:
    batch = example_batch("bob-0", n=7, seed=2)
    return np.frombuffer(batch.features.data, dtype="<f4").reshape(tuple(batch.features.shape))


def export(s: RunningServer, job_id: str) -> pb.ExportResult:
    request = pb.ExportModelsRequest(job_ids=[job_id], formats=["onnx"])
    return s.operator.ExportModels(request, metadata=s.op_md, timeout=120).results[0]


def test_revoking_removes_the_user_from_finished_jobs_snapshots(
    running_server: RunningServer,
) -> None:
    s = running_server
    alice, bob = two_users(s)
    job_id = run_job(s, steps=2)
    assert finish(s, job_id).state == pb.JOB_STATE_SUCCEEDED
    job_dir = s.handle.app.jobs.job_dir(job_id)
    assert sorted(set(snapshot(job_dir)[1])) == [(APP_ID, "alice"), (APP_ID, "bob")]
    assert revoke(alice) == 5
    x, owners = snapshot(job_dir)
    assert owners == [(APP_ID, "bob")] * 7 and np.array_equal(x, bobs_features())
    assert stat.S_IMODE((job_dir / "dataset.npz").stat().st_mode) == 0o600
    log = json.loads((job_dir / "purge.json").read_text())
    assert log["pending"] == [] and [(d["user_id"], d["rows_removed"]) for d in log["done"]] == [
        ("alice", 5)
    ]
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job_id), metadata=s.op_md)
    assert {u.user_id: u.examples for u in audit.users} == {
        "alice": 5,
        "bob": 7,
    }  # the record stays
    assert export(s, job_id).ok  # re-export still works on what is left
    revoke(bob)
    assert not (job_dir / "dataset.npz").exists()
    refused = export(s, job_id)
    assert not refused.ok and "every user in it revoked consent" in refused.error
    assert "start a new job" in refused.error


def test_a_running_jobs_snapshot_is_purged_when_its_worker_exits(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    s = server_factory()
    alice, _ = two_users(s)
    job_id = run_job(s, steps=40)
    job_dir = s.handle.app.jobs.job_dir(job_id)
    wait_for_step(s, job_id, 2)
    revoke(alice)
    assert (APP_ID, "alice") in snapshot(job_dir)[1]  # the worker runs on it: removed when it exits
    assert finish(s, job_id).state == pb.JOB_STATE_SUCCEEDED
    assert snapshot(job_dir)[1] == [(APP_ID, "bob")] * 7


def test_an_unfinished_job_whose_users_all_revoked_fails_instead_of_resuming(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    first = server_factory()
    alice, bob = two_users(first)
    job_id = run_job(first, steps=200)
    wait_for_step(first, job_id, 2)
    revoke(alice)
    revoke(bob)
    first.stop()  # the job stays running in the store; its worker exited, so the purge is applied now
    assert not (first.handle.app.jobs.job_dir(job_id) / "dataset.npz").exists()
    second = server_factory(data_dir=first.data_dir, operator_token=first.operator_token)
    final = second.operator.GetJob(pb.GetJobRequest(job_id=job_id), metadata=second.op_md)
    deadline = time.monotonic() + 30
    while final.state != pb.JOB_STATE_FAILED and time.monotonic() < deadline:
        time.sleep(0.05)
        final = second.operator.GetJob(pb.GetJobRequest(job_id=job_id), metadata=second.op_md)
    assert final.state == pb.JOB_STATE_FAILED and "revoked consent" in final.error


def wait_for_step(
    s: RunningServer | ServerProcess, job_id: str, step: int, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job = s.operator.GetJob(pb.GetJobRequest(job_id=job_id), metadata=s.op_md, timeout=10)
        if job.progress.stage == "search" and job.progress.step >= step:
            return
        assert time.monotonic() < deadline and job.state in (
            pb.JOB_STATE_QUEUED,
            pb.JOB_STATE_RUNNING,
        )
        time.sleep(0.05)


def test_a_purge_recorded_while_running_survives_sigkill_and_the_job_restarts_clean(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    data_dir, token = tmp_path / "var", secrets.token_urlsafe(32)
    args, env = ("--engine", FAKE_ENGINE), {"AUTOHAS_FAKE_STEP_S": "0.05"}
    server = server_process(data_dir, token, *args, env=env)
    tokens = seed_process(server)  # u0..u3 consent; u0 and u1 upload
    for user, n in (("u0", 4), ("u1", 6)):
        batch = example_batch(f"{user}-0", n=n)
        server.device.UploadExamples(iter([batch]), metadata=bearer(tokens[user]), timeout=30)
    request = pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=60))
    job_id = server.operator.StartJob(request, metadata=server.op_md).job_id
    wait_for_step(server, job_id, 5)
    server.device.RevokeConsent(
        pb.RevokeConsentRequest(purpose=PURPOSE), metadata=bearer(tokens["u0"])
    )
    job_dir = data_dir / "jobs" / job_id
    assert json.loads((job_dir / "purge.json").read_text())["pending"] == [[APP_ID, "u0"]]
    server.kill()
    server = server_process(data_dir, token, *args, env=env)
    events = list(
        server.operator.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=server.op_md, timeout=60
        )
    )
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED
    result = json.loads((job_dir / "run" / "result.json").read_text())
    assert result["resumed_from"] == 0 and result["examples"] == 6  # restarted on u1's rows alone
    assert snapshot(job_dir)[1] == [(APP_ID, "u1")] * 6


def test_revoked_examples_leave_no_trace_in_the_database_files(
    running_server: RunningServer,
) -> None:
    s = running_server
    s.create_task()
    device = s.register()
    grant(device)
    marker = np.full((8, 1, 16), 1234.5678, dtype="<f4")  # a pattern that occurs nowhere else
    batch = pb.ExampleBatch(
        batch_id="m",
        task_id=TASK_ID,
        labels=[0] * 8,
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=marker.shape, data=marker.tobytes()),
    )
    device.stub.UploadExamples(iter([batch]), metadata=device.md)
    needle = marker.tobytes()[:64]

    def traces() -> int:
        return sum(f.read_bytes().count(needle) for f in s.data_dir.iterdir() if f.is_file())

    assert traces() > 0
    assert revoke(device) == 8
    assert traces() == 0  # neither the database file nor its WAL, while the server runs


def test_a_device_revoking_cannot_purge_another_users_rows(running_server: RunningServer) -> None:
    s = running_server
    two_users(s)
    job_id = run_job(s, steps=2)
    finish(s, job_id)
    other = s.register(app_id="app.other", user_id="alice")  # the same user id in another app
    grant(other)
    assert revoke(other) == 0
    assert sorted(set(snapshot(s.handle.app.jobs.job_dir(job_id))[1])) == [
        (APP_ID, "alice"),
        (APP_ID, "bob"),
    ]
    assert s.handle.app.store.count_examples(TASK_ID) == 12

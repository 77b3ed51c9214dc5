"""A full disk, for real (a small tmpfs): uploads answer RESOURCE_EXHAUSTED, the scheduler survives,
temp files never keep a revoked user's rows, health stays SERVING while the server still works."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autohas_edge.common.fs import atomic_write_npz
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.jobs import retention
from tests.fixtures.server_fixtures import (
    PURPOSE,
    RunningServer,
    example_batch,
    expect_error,
)
from tests.server.disk import SmallDisk, small_disk  # noqa: F401 (a fixture)
from tests.server.test_jobs import get, start, wait_for

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


def _seeded(factory: Callable[..., RunningServer], data_dir: Path, **config: object):
    s = factory(data_dir=data_dir, **config)
    s.create_task()
    device = s.register()
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    device.stub.UploadExamples(iter([example_batch("b0", n=64)]), metadata=device.md)
    return s, device


def _health(s: RunningServer) -> int:
    stub = health_pb2_grpc.HealthStub(s.channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_an_upload_on_a_full_disk_is_resource_exhausted_and_health_stays_serving(
    small_disk: SmallDisk,  # noqa: F811
    server_factory: Callable[..., RunningServer],
) -> None:
    s, device = _seeded(server_factory, small_disk.root / "data")
    small_disk.fill()
    big = example_batch("b1", n=20000)  # 1.3 MB: more than any slack SQLite kept
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        device.stub.UploadExamples,
        iter([big]),
        metadata=device.md,
    )
    assert "disk is full" in details and "Traceback" not in details
    assert _health(s) == health_pb2.HealthCheckResponse.SERVING  # reads and jobs still work
    small_disk.free()
    # the connection that hit the full disk is usable again: the next upload on it is stored
    reply = device.stub.UploadExamples(iter([big]), metadata=device.md)
    assert list(reply.stored_batch_ids) == ["b1"]


def test_the_scheduler_survives_a_full_disk_and_runs_later_jobs(
    small_disk: SmallDisk,  # noqa: F811
    server_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    s, device = _seeded(server_factory, small_disk.root / "data", max_running_jobs=1)
    device.stub.UploadExamples(iter([example_batch("b1", n=12000)]), metadata=device.md)
    first = start(s, steps=100000)  # holds the only job slot
    wait_for(lambda: get(s, first.job_id).state == pb.JOB_STATE_RUNNING)
    second = start(s, steps=2)  # queued: its snapshot will be taken on a full disk
    small_disk.fill()
    s.operator.CancelJob(pb.CancelJobRequest(job_id=first.job_id), metadata=s.op_md)
    # the store can record nothing: the job waits, and says why (or FAILED, if SQLite had room)
    wait_for(lambda: "disk is full" in get(s, second.job_id).error, timeout=30)
    assert get(s, first.job_id).state == pb.JOB_STATE_CANCELLED
    assert s.handle.app.jobs.scheduler_alive()
    assert not list((small_disk.root / "data" / "jobs").rglob("*.tmp"))  # no half-written snapshot
    small_disk.free()
    wait_for(lambda: get(s, second.job_id).state in TERMINAL, timeout=30)
    assert get(s, second.job_id).state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED)
    third = start(s, steps=2)
    wait_for(lambda: get(s, third.job_id).state == pb.JOB_STATE_SUCCEEDED, timeout=60)
    stored = s.handle.app.store.get_job(first.job_id)
    assert stored is not None and stored.state.value == "cancelled"  # recorded once writable again


def test_a_failed_atomic_write_leaves_no_temp_file(small_disk: SmallDisk) -> None:  # noqa: F811
    small_disk.fill()
    target = small_disk.root / "dataset.npz"
    with pytest.raises(OSError, match="No space left"):
        atomic_write_npz(target, {"x": np.zeros((1 << 20,), np.float32)})
    assert sorted(p.name for p in small_disk.root.iterdir()) == [".filler"]


def _plant_temp(s: RunningServer, job_id: str) -> Path:
    """A temp file as an interrupted snapshot write leaves it (it would hold user rows)."""
    stale = s.handle.app.jobs.job_dir(job_id) / f".{retention.DATASET}.x1y2z3.tmp"
    stale.write_bytes(b"rows of a user")
    return stale


def test_start_up_and_revocation_sweep_stale_temp_files(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    s, device = _seeded(server_factory, tmp_path / "data")
    job = start(s, steps=2)
    wait_for(lambda: get(s, job.job_id).state == pb.JOB_STATE_SUCCEEDED)
    stale = _plant_temp(s, job.job_id)
    device.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=device.md)
    assert not stale.exists()
    stale = _plant_temp(s, job.job_id)
    s.stop()
    server_factory(data_dir=tmp_path / "data")
    assert not stale.exists()


def test_health_turns_not_serving_when_jobs_can_no_longer_run(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory()
    assert _health(s) == health_pb2.HealthCheckResponse.SERVING
    s.handle.app.jobs.close(grace=1.0)  # the scheduler thread ends: queued jobs would never start
    wait_for(
        lambda: _health(s) == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=10,
    )

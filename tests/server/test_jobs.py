"""Search jobs through a real server, with the fast fake engine: worker processes, watch, cancel, resume."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import grpc
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    PURPOSE,
    TASK_ID,
    RunningServer,
    SeededServer,
    example_batch,
    expect_error,
)


def seed(s: RunningServer) -> None:
    """A task with one consenting device's examples."""
    s.create_task()
    device = s.register()
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    device.stub.UploadExamples(iter([example_batch("b1", n=12)]), metadata=device.md)


def start(s: RunningServer, **spec: object) -> pb.Job:
    return s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, **spec)), metadata=s.op_md
    )


def watch(s: RunningServer, job_id: str, timeout: float = 60) -> list[pb.JobProgress]:
    return list(
        s.operator.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=s.op_md, timeout=timeout)
    )


def get(s: RunningServer, job_id: str) -> pb.Job:
    return s.operator.GetJob(pb.GetJobRequest(job_id=job_id), metadata=s.op_md)


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def result_json(s: RunningServer, job_id: str) -> dict:
    return json.loads((s.handle.app.jobs.run_dir(job_id) / "result.json").read_text())


def test_a_job_runs_in_a_worker_process_and_streams_its_progress(
    seeded_server: SeededServer,
) -> None:
    s = seeded_server.server
    device = seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1", n=12)]), metadata=device.md)
    job = start(s, steps=8, seed=3, max_params=5000)
    assert job.state == pb.JOB_STATE_QUEUED and job.spec.steps == 8 and job.created_at.seconds > 0
    events = watch(s, job.job_id)
    stages = [e.stage for e in events]
    assert stages[-1] == "done" and events[-1].state == pb.JOB_STATE_SUCCEEDED
    # Progress events may be coalesced under load, so a short stage can be missed; order must hold.
    assert "search" in stages
    assert "retrain" not in stages or stages.index("search") < stages.index("retrain")
    search = [e for e in events if e.stage == "search"]
    assert all(e.total_steps == 8 and e.encodings[0].name == "block0.kernel" for e in search)
    assert [e.step for e in search] == sorted(e.step for e in search)
    done = get(s, job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.result.params == 1234
    assert dict(done.result.architecture) == {"block0.kernel": "3"} and done.finished_at.seconds > 0
    result = result_json(s, job.job_id)
    assert result["examples"] == 12 and result["device"] == "cpu"
    assert result["pid"] != os.getpid()  # the search ran in its own process, not in a gRPC thread
    assert (s.handle.app.jobs.run_dir(job.job_id).parent / "worker.log").exists()


def test_list_jobs_filters_by_task(seeded_server: SeededServer) -> None:
    s = seeded_server.server
    device = seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1")]), metadata=device.md)
    s.create_task("other")
    job = start(s, steps=2)
    watch(s, job.job_id)
    listed = s.operator.ListJobs(pb.ListJobsRequest(task_id=TASK_ID), metadata=s.op_md).jobs
    assert [j.job_id for j in listed] == [job.job_id]
    assert s.operator.ListJobs(pb.ListJobsRequest(task_id="other"), metadata=s.op_md).jobs == []
    assert len(s.operator.ListJobs(pb.ListJobsRequest(), metadata=s.op_md).jobs) == 1


@pytest.mark.parametrize(
    ("spec", "code", "field"),
    [
        ({"task_id": "nope"}, grpc.StatusCode.NOT_FOUND, "spec.task_id"),
        ({"task_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "spec.task_id"),
        ({"task_id": TASK_ID, "steps": -1}, grpc.StatusCode.INVALID_ARGUMENT, "spec.steps"),
        (
            {"task_id": TASK_ID, "max_params": -5},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.max_params",
        ),
        ({"task_id": TASK_ID, "seed": -1}, grpc.StatusCode.INVALID_ARGUMENT, "spec.seed"),
        (
            {"task_id": TASK_ID, "max_flops": -1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.max_flops",
        ),
        (
            {"task_id": TASK_ID, "max_latency_ms": float("inf")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.max_latency_ms",
        ),
        (
            {"task_id": TASK_ID, "within_points": 101.0},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.within_points",
        ),
        (
            {"task_id": TASK_ID, "validation_fraction": 1.5},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.validation_fraction",
        ),
        (
            {"task_id": TASK_ID, "test_fraction": float("nan")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.test_fraction",
        ),
        ({"task_id": TASK_ID, "mode": 9}, grpc.StatusCode.INVALID_ARGUMENT, "spec.mode"),
        (
            {"task_id": TASK_ID, "strategy": "no way"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.strategy",
        ),
        (
            {"task_id": TASK_ID, "strategy": "bayesian"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.strategy",
        ),
        (
            {"task_id": TASK_ID, "validation_fraction": 0.2},
            grpc.StatusCode.INVALID_ARGUMENT,
            "spec.validation_fraction: not supported",
        ),
    ],
)
def test_bad_job_specs_are_refused(
    seeded_server: SeededServer, spec: dict, code: grpc.StatusCode, field: str
) -> None:
    s = seeded_server.server
    device = seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1")]), metadata=device.md)
    request = pb.StartJobRequest(spec=pb.JobSpec(**spec))
    assert expect_error(code, s.operator.StartJob, request, metadata=s.op_md).startswith(field)


def test_unknown_job_ids_are_not_found(running_server: RunningServer) -> None:
    s = running_server
    for method, request in (
        (s.operator.GetJob, pb.GetJobRequest(job_id="job-x")),
        (s.operator.CancelJob, pb.CancelJobRequest(job_id="job-x")),
        (s.operator.WatchJob, pb.WatchJobRequest(job_id="job-x")),
        (s.operator.GetJobAudit, pb.GetJobRequest(job_id="job-x")),
    ):
        assert expect_error(
            grpc.StatusCode.NOT_FOUND, method, request, metadata=s.op_md
        ).startswith("job_id")


def test_a_failing_search_marks_the_job_failed_with_the_reason(seeded_server: SeededServer) -> None:
    s = seeded_server.server
    device = seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1")]), metadata=device.md)
    job = start(s, strategy="fail")
    assert watch(s, job.job_id)[-1].state == pb.JOB_STATE_FAILED
    assert get(s, job.job_id).error == "RuntimeError: the fake engine was told to fail"


def test_cancel_stops_a_running_job_and_a_queued_one_at_once(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.1")
    s = server_factory(max_running_jobs=1)
    seed(s)
    running, queued = start(s, steps=500), start(s, steps=500)
    wait_for(lambda: get(s, running.job_id).progress.step >= 2)
    cancelled = s.operator.CancelJob(pb.CancelJobRequest(job_id=queued.job_id), metadata=s.op_md)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        s.operator.GetJobAudit,
        pb.GetJobRequest(job_id=queued.job_id),
        metadata=s.op_md,
    )  # never started: used no data
    s.operator.CancelJob(pb.CancelJobRequest(job_id=running.job_id), metadata=s.op_md)
    final = watch(s, running.job_id)[-1]
    assert final.state == pb.JOB_STATE_CANCELLED and final.step < 500
    again = s.operator.CancelJob(pb.CancelJobRequest(job_id=running.job_id), metadata=s.op_md)
    assert again.state == pb.JOB_STATE_CANCELLED  # cancelling twice is harmless


def test_the_server_answers_while_a_search_runs(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    s = server_factory()
    seed(s)
    job = start(s, steps=100)
    wait_for(lambda: get(s, job.job_id).progress.step >= 1)
    latencies = []
    for _ in range(20):
        t = time.perf_counter()
        get(s, job.job_id)
        latencies.append(time.perf_counter() - t)
    assert sorted(latencies)[10] < 0.1
    s.operator.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=s.op_md)


def test_a_running_job_resumes_from_its_checkpoint_after_a_restart(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    first = server_factory()
    seed(first)
    job = start(first, steps=40)
    wait_for(lambda: get(first, job.job_id).progress.step >= 5)
    first.stop()
    second = server_factory(data_dir=first.data_dir, operator_token=first.operator_token)
    assert get(second, job.job_id).state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
    assert watch(second, job.job_id)[-1].state == pb.JOB_STATE_SUCCEEDED
    result = result_json(second, job.job_id)
    assert 5 <= result["resumed_from"] < 40 and result["examples"] == 12
    audit = second.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=second.op_md)
    assert audit.total_examples == 12  # the snapshot of the first start was reused


def test_watch_streams_are_capped_and_polling_still_answers(
    server_factory: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.1")
    s = server_factory(max_watch_streams=1, rpc_threads=4)
    seed(s)
    job = start(s, steps=300)
    first = s.operator.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=s.op_md, timeout=60)
    next(first)  # holds the only watch slot
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        s.operator.WatchJob,
        pb.WatchJobRequest(job_id=job.job_id),
        metadata=s.op_md,
        timeout=10,
    )
    assert "poll GetJob" in details and get(s, job.job_id).job_id == job.job_id
    first.cancel()
    wait_for(lambda: _watch_accepted(s, job.job_id))
    s.operator.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=s.op_md)


def _watch_accepted(s: RunningServer, job_id: str) -> bool:
    stream = s.operator.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=s.op_md, timeout=10)
    try:
        next(stream)
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        return False
    finally:
        stream.cancel()

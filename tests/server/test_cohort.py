"""A job needs a minimum cohort of consented users; a revocation after the snapshot is recorded in the
job's audit (the `retain` policy: its models stay)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    PURPOSE,
    TASK_ID,
    Device,
    RunningServer,
    example_batch,
    expect_error,
)
from tests.server.test_jobs import start, watch


def contributor(s: RunningServer, user: str) -> Device:
    device = s.register(user_id=user)
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    device.stub.UploadExamples(iter([example_batch(f"{user}-1")]), metadata=device.md)
    return device


def _task(s: RunningServer, min_users: int) -> None:
    task = pb.Task(
        task_id=TASK_ID,
        app_ids=["com.example.app"],
        purpose=PURPOSE,
        input_shape=[1, 16],
        input_dtype=pb.DTYPE_FLOAT32,
        num_classes=3,
        min_users=min_users,
    )
    created = s.operator.CreateTask(pb.CreateTaskRequest(task=task), metadata=s.op_md)
    assert created.min_users == min_users


def test_a_job_below_the_tasks_minimum_cohort_is_refused(running_server: RunningServer) -> None:
    s = running_server
    _task(s, min_users=3)
    alice = contributor(s, "alice")
    alice.stub.UploadExamples(iter([example_batch("more", n=40)]), metadata=alice.md)
    contributor(s, "bob")
    details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, start, s, steps=2)
    assert "2 distinct user(s); a job needs at least 3" in details
    contributor(s, "carol")
    job = start(s, steps=2)
    assert watch(s, job.job_id)[-1].state == pb.JOB_STATE_SUCCEEDED


def test_the_servers_default_cohort_applies_to_tasks_that_set_none(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(min_cohort_users=2)
    _task(s, min_users=0)
    contributor(s, "alice")
    details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, start, s, steps=2)
    assert "at least 2" in details
    contributor(s, "bob")
    start(s, steps=2)


def test_a_revocation_after_the_snapshot_is_recorded_in_the_audit(
    running_server: RunningServer,
) -> None:
    s = running_server
    _task(s, min_users=0)
    alice, _ = contributor(s, "alice"), contributor(s, "bob")
    job = start(s, steps=2)
    watch(s, job.job_id)
    alice.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=alice.md)
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    by_user = {u.user_id: u for u in audit.users}
    assert by_user["alice"].HasField("consent_revoked_at") and by_user["alice"].examples == 8
    assert not by_user["bob"].HasField("consent_revoked_at")
    # she consents again: the job still records that the consent it used was revoked
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    alice.stub.GrantConsent(grant, metadata=alice.md)
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    assert {u.user_id: u for u in audit.users}["alice"].HasField("consent_revoked_at")

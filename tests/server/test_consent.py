"""Consent through a real server: uploads need it, revoking deletes at once, jobs use only consented data."""

from __future__ import annotations

import grpc
import numpy as np

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    PURPOSE,
    TASK_ID,
    Device,
    RunningServer,
    SeededServer,
    example_batch,
    expect_error,
)


def grant(device: Device, version: str = "v1", purpose: str = PURPOSE) -> pb.Consent:
    return device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=purpose, consent_text_version=version), metadata=device.md
    )


def revoke(device: Device, purpose: str = PURPOSE) -> pb.RevokeConsentResponse:
    return device.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=purpose), metadata=device.md)


def upload(device: Device, batch_id: str, n: int = 8) -> pb.UploadSummary:
    return device.stub.UploadExamples(iter([example_batch(batch_id, n=n)]), metadata=device.md)


def finish(s: RunningServer, job_id: str) -> pb.JobProgress:
    progress = list(
        s.operator.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=s.op_md, timeout=60)
    )
    return progress[-1]


def test_uploads_without_active_consent_are_refused(running_server: RunningServer) -> None:
    s = running_server
    s.create_task()
    device = s.register()
    details = expect_error(grpc.StatusCode.FAILED_PRECONDITION, upload, device, "b1")
    assert details.startswith(
        "consent: user 'alice' has no active consent for purpose 'personalization'"
    )
    grant(device, purpose="advertising")  # another purpose does not count
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, upload, device, "b1")
    grant(device)
    assert upload(device, "b1").examples_stored == 8


def test_grants_are_recorded_with_version_and_time(running_server: RunningServer) -> None:
    device = running_server.register()
    first = grant(device, "v1")
    assert first.active and first.user_id == "alice" and first.granted_at.seconds > 0
    assert grant(device, "v1") == first  # idempotent
    second = grant(device, "v2")
    consents = device.stub.ListConsents(pb.ListConsentsRequest(), metadata=device.md).consents
    assert [(c.consent_text_version, c.active) for c in consents] == [("v2", True), ("v1", False)]
    assert consents[1].revoked_at == second.granted_at
    for bad in (
        pb.GrantConsentRequest(purpose="", consent_text_version="v1"),
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version=""),
    ):
        details = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT, device.stub.GrantConsent, bad, metadata=device.md
        )
        assert details.split(":")[0] in ("purpose", "consent_text_version")


def test_revocation_deletes_the_users_examples_at_once(seeded_server: SeededServer) -> None:
    s, alice = seeded_server.server, seeded_server.device
    bob = s.register(user_id="bob")
    grant(bob)
    upload(alice, "a1", 5)
    upload(alice, "a2", 7)
    upload(bob, "b1", 3)
    reply = revoke(alice)
    assert (
        reply.examples_deleted == 12
        and not reply.consent.active
        and reply.consent.revoked_at.seconds > 0
    )
    store = s.handle.app.store
    assert (
        store.count_examples(TASK_ID, user_id="alice") == 0 and store.count_examples(TASK_ID) == 3
    )
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, upload, alice, "a3")
    assert revoke(alice).examples_deleted == 0  # a retried revoke is harmless
    grant(alice, "v2")  # consenting again starts from nothing
    assert upload(alice, "a1", 5).examples_stored == 5


def test_revoking_what_was_never_granted_is_not_found(running_server: RunningServer) -> None:
    device = running_server.register()
    details = expect_error(grpc.StatusCode.NOT_FOUND, revoke, device)
    assert details.startswith("purpose")


def test_a_job_snapshots_only_consenting_users_and_records_the_audit(
    seeded_server: SeededServer,
) -> None:
    s, alice = seeded_server.server, seeded_server.device
    bob, carol = s.register(user_id="bob"), s.register(user_id="carol")
    grant(bob, "v2")
    grant(carol)
    upload(alice, "a1", 4)
    upload(bob, "b1", 6)
    upload(carol, "c1", 5)
    revoke(carol)
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=3)), metadata=s.op_md
    )
    assert finish(s, job.job_id).state == pb.JOB_STATE_SUCCEEDED
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    users = {(u.user_id, u.examples, u.consent_text_version, u.app_id) for u in audit.users}
    assert users == {("alice", 4, "v1", "com.example.app"), ("bob", 6, "v2", "com.example.app")}
    assert audit.total_examples == 10 and audit.purpose == PURPOSE and audit.task_id == TASK_ID
    with np.load(s.handle.app.jobs.job_dir(job.job_id) / "dataset.npz") as data:
        assert data["x"].shape == (10, 1, 16) and data["x"].dtype == np.float32
        assert data["y"].dtype == np.int64 and set(data["y"].tolist()) <= {0, 1, 2}


def test_revoking_after_a_job_started_does_not_rewrite_its_audit(
    seeded_server: SeededServer,
) -> None:
    s, alice = seeded_server.server, seeded_server.device
    upload(alice, "a1", 4)
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=3)), metadata=s.op_md
    )
    finish(s, job.job_id)
    revoke(alice)
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    assert [(u.user_id, u.examples) for u in audit.users] == [("alice", 4)]
    details = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        s.operator.StartJob,
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID)),
        metadata=s.op_md,
    )
    assert details.startswith("spec.task_id") and "no consented examples" in details

"""The server logs one line per registration, consent change, upload, job state change and export,
with no user id in clear (users appear as `user#<hash>`)."""

from __future__ import annotations

import logging

import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.tokens import user_ref
from tests.fixtures.server_fixtures import APP_ID, PURPOSE, TASK_ID, RunningServer, example_batch
from tests.server.test_jobs import watch

USER = "alice.smith@example.com"


def test_the_log_tells_what_happened_without_user_ids(
    running_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    s = running_server
    s.create_task()
    with caplog.at_level(logging.INFO, logger="autohas_edge.server"):
        device = s.register(user_id=USER)
        grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
        device.stub.GrantConsent(grant, metadata=device.md)
        batches = [example_batch("b1", n=12), example_batch("b2", n=4, seed=1)]
        device.stub.UploadExamples(iter(batches), metadata=device.md)
        job = s.operator.StartJob(
            pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=2)), metadata=s.op_md
        )
        watch(s, job.job_id)
        request = pb.ExportModelsRequest(job_ids=[job.job_id], formats=["onnx"])
        s.operator.ExportModels(request, metadata=s.op_md)
        device.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=device.md)
    lines = [r.getMessage() for r in caplog.records]
    ref = user_ref(APP_ID, USER)
    expected = [
        f"registered device {device.device_id} of app {APP_ID} for {ref}",
        f"consent granted: {ref} of app {APP_ID}, purpose {PURPOSE}, text v1",
        f"upload from device {device.device_id}: 2 batches stored (16 examples), 0 duplicates",
        f"job {job.job_id} of task {TASK_ID}: queued",
        f"job {job.job_id} of task {TASK_ID}: running",
        f"job {job.job_id} of task {TASK_ID}: succeeded",
        f"export: job {job.job_id} -> model ",
        f"consent revoked: {ref} of app {APP_ID}, purpose {PURPOSE}; 16 examples deleted",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert not any(USER in line or "alice" in line for line in lines)

"""Consent audit, property-based: after any sequence of grants, revocations, uploads and jobs (hypothesis
stateful testing against a real server with the fast fake engine):

- every example in a job's data manifest (`audit.json`) belongs to a user whose consent for the task's
  purpose was active at the job's snapshot time, and was uploaded by that user to that task;
- the audit over the API agrees with the manifest;
- once a job has ended, its snapshot holds no row of a user who revoked consent after the snapshot.

The model of consent is built from the server's replies alone (grant and revoke timestamps).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import Device, RunningServer, example_batch, start_server

APP_A, APP_B = "app.a", "app.b"
TASKS = {"t-ads": "ads", "t-keys": "keyboard"}  # task -> purpose
TASK_APPS = {"t-ads": (APP_A, APP_B), "t-keys": (APP_A,)}
PURPOSES = ("ads", "ads", "keyboard")  # drawn from: mostly the purpose of the task with two apps
TASK_DRAWS = ("t-ads", "t-ads", "t-keys")
USERS = ((APP_A, "u0"), (APP_A, "u0"), (APP_A, "u1"), (APP_B, "u0"))  # two devices of one user
MAX_JOBS = 6
STEP_S = "AUTOHAS_FAKE_STEP_S"  # the fake engine's seconds a step
Key = tuple[str, str, str]  # (app, user, purpose)


def seconds(ts: object) -> float:
    return ts.seconds + ts.nanos / 1e9  # type: ignore[attr-defined]


class ConsentAudit(RuleBasedStateMachine):
    """Drives one fresh server; checks every job's manifest against a model of consent built from replies."""

    def __init__(self) -> None:
        super().__init__()
        # Jobs that run for about a second, so revocations often land while one runs.
        self.step_s = os.environ.get(STEP_S)
        os.environ[STEP_S] = "0.05"
        self.tmp = Path(tempfile.mkdtemp(prefix="consent-audit-"))
        self.server: RunningServer = start_server(self.tmp / "data", max_running_jobs=2)
        for task_id, purpose in TASKS.items():
            self.server.create_task(task_id, app_ids=TASK_APPS[task_id], purpose=purpose)
        self.devices: list[Device] = [self.server.register(app, user) for app, user in USERS]
        self.grants: dict[Key, list[list[float | None]]] = {}  # [granted_at, closed_at or None]
        self.revocations: dict[Key, list[float]] = {}
        self.uploads: dict[
            tuple[str, str], tuple[str, str, str]
        ] = {}  # (device, batch) -> (app, user, task)
        self.jobs: list[str] = []
        self.batches = 0

    def key(self, device: Device, purpose: str) -> Key:
        return device.app_id, device.user_id, purpose

    def active(self, key: Key) -> list[float | None] | None:
        intervals = self.grants.get(key, [])
        return intervals[-1] if intervals and intervals[-1][1] is None else None

    @initialize(consenting=st.sets(st.integers(0, len(USERS) - 1), min_size=1))
    def some_users_consent_and_upload(self, consenting: set[int]) -> None:
        """Start from data worth a job: some users consent to "ads" and upload to its task; a job starts."""
        for d in sorted(consenting):
            self.grant(d, "ads", "v1")
            self.upload(d, "t-ads", 3)
        self.start_job("t-ads")

    @rule(
        d=st.integers(0, len(USERS) - 1),
        purpose=st.sampled_from(PURPOSES),
        version=st.sampled_from(["v1", "v2"]),
    )
    def grant(self, d: int, purpose: str, version: str) -> None:
        device = self.devices[d]
        request = pb.GrantConsentRequest(purpose=purpose, consent_text_version=version)
        at = seconds(device.stub.GrantConsent(request, metadata=device.md).granted_at)
        current = self.active(self.key(device, purpose))
        if current is not None and current[0] == at:
            return  # the same version again: nothing changed
        if current is not None:
            current[1] = at  # a new text version replaces the old grant
        self.grants.setdefault(self.key(device, purpose), []).append([at, None])

    @rule(d=st.integers(0, len(USERS) - 1), purpose=st.sampled_from(PURPOSES))
    def revoke(self, d: int, purpose: str) -> None:
        device, key = self.devices[d], self.key(self.devices[d], purpose)
        try:
            reply = device.stub.RevokeConsent(
                pb.RevokeConsentRequest(purpose=purpose), metadata=device.md
            )
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND and key not in self.grants  # type: ignore[attr-defined]
            return
        current = self.active(key)
        if current is not None:
            current[1] = seconds(reply.consent.revoked_at)
            self.revocations.setdefault(key, []).append(current[1])

    @rule(d=st.integers(0, len(USERS) - 1), task=st.sampled_from(TASK_DRAWS), n=st.integers(1, 4))
    def upload(self, d: int, task: str, n: int) -> None:
        device = self.devices[d]
        self.batches += 1
        batch = example_batch(f"b{self.batches}", n=n, task_id=task, seed=self.batches)
        try:
            device.stub.UploadExamples(iter([batch]), metadata=device.md)
        except grpc.RpcError as e:
            expected = (
                grpc.StatusCode.NOT_FOUND
                if device.app_id not in TASK_APPS[task]
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            assert e.code() == expected  # type: ignore[attr-defined]
            if expected == grpc.StatusCode.FAILED_PRECONDITION:
                assert self.active(self.key(device, TASKS[task])) is None
            return
        assert self.active(self.key(device, TASKS[task])) is not None, (
            "an upload without consent was stored"
        )
        self.uploads[(device.device_id, batch.batch_id)] = (device.app_id, device.user_id, task)

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(task=st.sampled_from(TASK_DRAWS))
    def start_job(self, task: str) -> None:
        request = pb.StartJobRequest(spec=pb.JobSpec(task_id=task, steps=20))
        try:
            self.jobs.append(
                self.server.operator.StartJob(request, metadata=self.server.op_md).job_id
            )
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]

    @rule()
    def let_jobs_run(self) -> None:
        self.settle(timeout=0.5)

    def settle(self, timeout: float) -> None:
        """Wait (bounded) until every job has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(not self.ended(job_id) for job_id in self.jobs):
            time.sleep(0.05)

    def ended(self, job_id: str) -> bool:
        job = self.server.operator.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=self.server.op_md
        )
        return job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)

    def consented_at(self, key: Key, t: float) -> bool:
        return any(
            start <= t and (end is None or t < end) for start, end in self.grants.get(key, [])
        )

    @invariant()
    def manifests_hold_only_consented_examples(self) -> None:
        for job_id in self.jobs:
            ended = self.ended(
                job_id
            )  # read before the files: a job seen ended has applied its purges
            try:
                audit = self.server.operator.GetJobAudit(
                    pb.GetJobRequest(job_id=job_id), metadata=self.server.op_md
                )
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
                continue  # not started yet: it has used no data
            self.check_manifest(job_id, audit)
            if ended:
                self.check_snapshot(job_id, audit)

    def check_manifest(self, job_id: str, audit: pb.JobAudit) -> None:
        manifest = json.loads(
            (self.server.handle.app.jobs.job_dir(job_id) / "audit.json").read_text()
        )
        at, purpose = seconds(audit.snapshot_at), TASKS[audit.task_id]
        counts: Counter[tuple[str, str]] = Counter()
        ids = [(batch["device_id"], batch["batch_id"]) for batch in manifest["batches"]]
        assert len(set(ids)) == len(ids), f"a batch is in the snapshot of {job_id} twice"
        for batch in manifest["batches"]:
            who = (batch["app_id"], batch["user_id"])
            assert self.uploads[(batch["device_id"], batch["batch_id"])] == (*who, audit.task_id)
            assert self.consented_at((*who, purpose), at), (
                f"{who} had no consent at the snapshot of {job_id}"
            )
            counts[who] += batch["examples"]
        assert counts == Counter({(u.app_id, u.user_id): u.examples for u in audit.users})

    def check_snapshot(self, job_id: str, audit: pb.JobAudit) -> None:
        dataset = self.server.handle.app.jobs.job_dir(job_id) / "dataset.npz"
        if not dataset.exists():
            return
        with np.load(dataset, allow_pickle=False) as data:
            owners = set(zip(data["owner_app"].tolist(), data["owner_user"].tolist(), strict=True))
        at, purpose = seconds(audit.snapshot_at), TASKS[audit.task_id]
        for who in owners:
            later = [t for t in self.revocations.get((*who, purpose), []) if t > at]
            assert not later, f"{who} revoked after the snapshot of {job_id} but is still in it"

    def teardown(self) -> None:
        try:  # end every job (a cancel applies the purges recorded while it ran), then check them all
            for job_id in self.jobs:
                self.server.operator.CancelJob(
                    pb.CancelJobRequest(job_id=job_id), metadata=self.server.op_md
                )
            self.settle(timeout=20)
            self.manifests_hold_only_consented_examples()
        finally:
            self.server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.step_s is None:
                os.environ.pop(STEP_S, None)
            else:
                os.environ[STEP_S] = self.step_s


def audit_settings(examples: int) -> settings:
    """No shrinking: each step drives a real server and its job processes, so shrinking a failure would
    take minutes; the failing sequence (at most 25 steps) is reported as found."""
    return settings(
        max_examples=examples,
        stateful_step_count=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.explicit, Phase.generate),
    )


def test_no_job_ever_uses_an_example_without_consent() -> None:
    run_state_machine_as_test(ConsentAudit, settings=audit_settings(5))


@pytest.mark.slow
def test_no_job_ever_uses_an_example_without_consent_in_many_more_histories() -> None:
    run_state_machine_as_test(ConsentAudit, settings=audit_settings(40))

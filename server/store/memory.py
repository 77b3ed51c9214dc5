"""An in-memory `Store`: the same contract as `SqliteStore`, for fast tests; nothing survives a restart."""

from __future__ import annotations

import dataclasses
import threading

from autohas_edge.server.domain import (
    Consent,
    Device,
    Job,
    JobAudit,
    ModelFile,
    ModelInfo,
    StoredBatch,
    Task,
)
from autohas_edge.server.store.base import NO_QUOTA, AddStatus, Quota, Snapshot, Store, stored_bytes


class MemoryStore(Store):
    """`Store` on dicts guarded by one lock (every method is one atomic step)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._devices: dict[str, Device] = {}
        self._tickets: dict[str, float] = {}  # used enrollment tickets' digests -> expiry
        self._consents: list[Consent] = []  # in grant order
        self._tasks: dict[str, Task] = {}
        self._batches: dict[tuple[str, str], StoredBatch] = {}  # (device_id, batch_id) -> batch
        self._jobs: dict[str, Job] = {}
        self._audits: dict[str, JobAudit] = {}
        self._models: dict[str, tuple[ModelInfo, tuple[ModelFile, ...]]] = {}

    def add_device(self, device: Device) -> None:
        with self._lock:
            if device.device_id in self._devices:
                raise KeyError(device.device_id)
            self._devices[device.device_id] = device

    def get_device(self, device_id: str) -> Device | None:
        with self._lock:
            return self._devices.get(device_id)

    def revoke_device(self, device_id: str, at: float) -> Device | None:
        with self._lock:
            device = self._devices.get(device_id)
            if device is not None and device.revoked_at is None:
                device = self._devices[device_id] = dataclasses.replace(device, revoked_at=at)
            return device

    def use_ticket(self, digest: str, expires_at: float, now: float) -> bool:
        with self._lock:
            self._tickets = {d: exp for d, exp in self._tickets.items() if exp > now}
            if digest in self._tickets:
                return False
            self._tickets[digest] = expires_at
            return True

    def _active(self, app_id: str, user_id: str, purpose: str) -> int | None:
        for i, c in enumerate(self._consents):
            if (c.app_id, c.user_id, c.purpose) == (app_id, user_id, purpose) and c.active:
                return i
        return None

    def grant_consent(self, consent: Consent) -> Consent:
        with self._lock:
            i = self._active(consent.app_id, consent.user_id, consent.purpose)
            if i is not None:
                if self._consents[i].consent_text_version == consent.consent_text_version:
                    return self._consents[i]
                self._consents[i] = dataclasses.replace(
                    self._consents[i], revoked_at=consent.granted_at
                )
            granted = dataclasses.replace(consent, revoked_at=None)
            self._consents.append(granted)
            return granted

    def revoke_consent(
        self, app_id: str, user_id: str, purpose: str, at: float
    ) -> tuple[Consent | None, int]:
        with self._lock:
            i = self._active(app_id, user_id, purpose)
            if i is not None:
                self._consents[i] = dataclasses.replace(self._consents[i], revoked_at=at)
            doomed = [
                k
                for k, b in self._batches.items()
                if (b.app_id, b.user_id) == (app_id, user_id)
                and self._tasks[b.task_id].purpose == purpose
            ]
            deleted = sum(self._batches.pop(k).count for k in doomed)
            key = (app_id, user_id, purpose)
            mine = [c for c in self._consents if (c.app_id, c.user_id, c.purpose) == key]
            return (mine[-1] if mine else None), deleted

    def list_consents(self, app_id: str, user_id: str) -> list[Consent]:
        with self._lock:
            return [
                c for c in reversed(self._consents) if (c.app_id, c.user_id) == (app_id, user_id)
            ]

    def add_task(self, task: Task) -> bool:
        with self._lock:
            return self._tasks.setdefault(task.task_id, task) is task

    def get_task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def list_tasks(self) -> list[Task]:
        with self._lock:
            return sorted(self._tasks.values(), key=lambda t: (t.created_at, t.task_id))

    def add_batch(self, batch: StoredBatch, purpose: str, quota: Quota = NO_QUOTA) -> AddStatus:
        with self._lock:
            if self._active(batch.app_id, batch.user_id, purpose) is None:
                return "no_consent"
            old = self._batches.get((batch.device_id, batch.batch_id))
            if old is not None:
                return "duplicate" if old.digest == batch.digest else "conflict"
            for status, limit, columns in quota.scopes(batch):
                used = sum(
                    stored_bytes(b)
                    for b in self._batches.values()
                    if all(getattr(b, k) == v for k, v in columns.items())
                )
                if used + stored_bytes(batch) > limit:
                    return status
            self._batches[(batch.device_id, batch.batch_id)] = batch
            return "stored"

    def count_examples(
        self, task_id: str, app_id: str | None = None, user_id: str | None = None
    ) -> int:
        with self._lock:
            return sum(
                b.count
                for b in self._batches.values()
                if b.task_id == task_id
                and app_id in (None, b.app_id)
                and user_id in (None, b.user_id)
            )

    def count_users(self, task_id: str, purpose: str) -> int:
        return len({(b.app_id, b.user_id) for b in self.snapshot(task_id, purpose).batches})

    def snapshot(self, task_id: str, purpose: str) -> Snapshot:
        with self._lock:
            versions = {
                (c.app_id, c.user_id): c.consent_text_version
                for c in self._consents
                if c.active and c.purpose == purpose
            }
            batches = [
                b
                for b in self._batches.values()
                if b.task_id == task_id and (b.app_id, b.user_id) in versions
            ]
            used = {(b.app_id, b.user_id) for b in batches}
            return Snapshot(batches, {k: v for k, v in versions.items() if k in used})

    def put_job(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.job_id] = job

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list_jobs(self, task_id: str | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if task_id in (None, j.spec.task_id)]
        return sorted(jobs, key=lambda j: (j.created_at, j.job_id))

    def put_audit(self, audit: JobAudit) -> None:
        with self._lock:
            if audit.job_id in self._audits:
                raise KeyError(audit.job_id)
            self._audits[audit.job_id] = dataclasses.replace(
                audit, users=tuple(sorted(audit.users, key=lambda u: (u.app_id, u.user_id)))
            )

    def get_audit(self, job_id: str) -> JobAudit | None:
        with self._lock:
            return self._audits.get(job_id)

    def add_model(self, info: ModelInfo, files: tuple[ModelFile, ...]) -> None:
        with self._lock:
            if info.model_id in self._models:
                raise KeyError(info.model_id)
            self._models[info.model_id] = (info, tuple(sorted(files, key=lambda f: f.path)))

    def get_model(self, model_id: str) -> tuple[ModelInfo, tuple[ModelFile, ...]] | None:
        with self._lock:
            return self._models.get(model_id)

    def list_models(self, task_id: str | None = None) -> list[ModelInfo]:
        with self._lock:
            infos = [m for m, _ in self._models.values() if task_id in (None, m.task_id)]
        return sorted(infos, key=lambda m: (-m.created_at, m.model_id))

    def close(self) -> None:
        """Nothing to release."""

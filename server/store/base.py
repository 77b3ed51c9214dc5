"""The store interface: devices, consents, tasks, examples, jobs, audits and models.

Two implementations pass one contract suite (`tests/server/store/test_store_contract.py`): `MemoryStore`
for fast tests and `SqliteStore`, the durable default. Methods that must be atomic say so.
"""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

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
from autohas_edge.server.errors import ResourceExhausted

#: Outcome of `Store.add_batch` (`*_quota`: storing it would exceed that quota; nothing stored).
AddStatus = Literal[
    "stored", "duplicate", "conflict", "no_consent", "device_quota", "user_quota", "app_quota"
]
UserKey = tuple[str, str]  # (app_id, user_id): user ids are the app's own, so only unique per app
#: errno values of a write that failed for lack of room: a full disk, a quota, a file size limit
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageFull(ResourceExhausted):
    """The server's disk (or a quota or file size limit on it) refused a write; nothing was stored."""

    def __init__(self, what: str, detail: str = "") -> None:
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"storage: the server's disk is full, so {what} could not be stored{suffix}; "
            "nothing was lost, retry later"
        )


def is_full_disk(error: BaseException) -> bool:
    """Whether `error` is a write refused for lack of room (OSError ENOSPC/EDQUOT/EFBIG or StorageFull)."""
    return isinstance(error, StorageFull) or (
        isinstance(error, OSError) and error.errno in FULL_ERRNOS
    )


@dataclass(frozen=True)
class Quota:
    """Stored example bytes (features + labels) allowed per device, per user and per app; 0 = none."""

    device_bytes: int = 0
    user_bytes: int = 0
    app_bytes: int = 0

    def scopes(self, batch: StoredBatch) -> list[tuple[AddStatus, int, dict[str, str]]]:
        """(status, limit, columns to match) of each limit that applies to `batch`'s uploader."""
        scopes: list[tuple[AddStatus, int, dict[str, str]]] = [
            ("device_quota", self.device_bytes, {"device_id": batch.device_id}),
            ("user_quota", self.user_bytes, {"app_id": batch.app_id, "user_id": batch.user_id}),
            ("app_quota", self.app_bytes, {"app_id": batch.app_id}),
        ]
        return [scope for scope in scopes if scope[1] > 0]


NO_QUOTA = Quota()


def stored_bytes(batch: StoredBatch) -> int:
    """The bytes a batch takes against its quotas: its features and labels."""
    return len(batch.features) + len(batch.labels)


@dataclass(frozen=True)
class Snapshot:
    """A consistent read of a task's examples whose users have active consent for its purpose."""

    batches: list[StoredBatch]
    consent_versions: dict[UserKey, str] = field(default_factory=dict)


class Store(ABC):
    """Persistent state of the server. Implementations are safe to call from many threads."""

    @abstractmethod
    def add_device(self, device: Device) -> None:
        """Insert a newly registered device."""

    @abstractmethod
    def get_device(self, device_id: str) -> Device | None:
        """The device with this id, if any (revoked ones too: see `Device.revoked_at`)."""

    @abstractmethod
    def revoke_device(self, device_id: str, at: float) -> Device | None:
        """Mark a device's token revoked at `at` (kept if already revoked); None for an unknown id."""

    @abstractmethod
    def use_ticket(self, digest: str, expires_at: float, now: float) -> bool:
        """Atomically record an enrollment ticket as used; False when it was used before.

        Records of tickets expired by `now` may be dropped (they can never be accepted again).
        """

    @abstractmethod
    def grant_consent(self, consent: Consent) -> Consent:
        """Atomically make `consent` the active one for its user and purpose and return the active one.

        An active consent with the same text version is kept (and returned); one with another version
        is closed at `consent.granted_at` and replaced, keeping the user's examples.
        """

    @abstractmethod
    def revoke_consent(
        self, app_id: str, user_id: str, purpose: str, at: float
    ) -> tuple[Consent | None, int]:
        """Atomically revoke the active consent and delete the user's examples in tasks of `purpose`.

        Returns the user's latest consent for the purpose (None if never granted) and how many examples
        were deleted.
        """

    @abstractmethod
    def list_consents(self, app_id: str, user_id: str) -> list[Consent]:
        """Every consent the user ever granted, newest first."""

    @abstractmethod
    def add_task(self, task: Task) -> bool:
        """Insert a task; False when its id is taken."""

    @abstractmethod
    def get_task(self, task_id: str) -> Task | None:
        """The task with this id, if any."""

    @abstractmethod
    def list_tasks(self) -> list[Task]:
        """All tasks, oldest first."""

    @abstractmethod
    def add_batch(self, batch: StoredBatch, purpose: str, quota: Quota = NO_QUOTA) -> AddStatus:
        """Atomically check the uploader's active consent for `purpose` and quotas, and durably store
        the batch.

        A batch id already stored for the device is a "duplicate" when its digest is the same and a
        "conflict" when not; neither stores anything. A batch that would take its device's, user's or
        app's stored bytes over `quota` is refused with that quota's status.
        """

    @abstractmethod
    def count_examples(
        self, task_id: str, app_id: str | None = None, user_id: str | None = None
    ) -> int:
        """Stored examples of a task, optionally only one app's or one user's."""

    @abstractmethod
    def count_users(self, task_id: str, purpose: str) -> int:
        """Distinct users with examples in the task and active consent for `purpose`."""

    @abstractmethod
    def snapshot(self, task_id: str, purpose: str) -> Snapshot:
        """A task's batches whose users hold active consent for `purpose`, read in one transaction."""

    @abstractmethod
    def put_job(self, job: Job) -> None:
        """Insert or replace a job record."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job | None:
        """The job with this id, if any."""

    @abstractmethod
    def list_jobs(self, task_id: str | None = None) -> list[Job]:
        """Jobs, oldest first, optionally only one task's."""

    @abstractmethod
    def put_audit(self, audit: JobAudit) -> None:
        """Record which users' data a job used (once per job)."""

    @abstractmethod
    def get_audit(self, job_id: str) -> JobAudit | None:
        """A job's audit, if its snapshot was taken."""

    @abstractmethod
    def add_model(self, info: ModelInfo, files: tuple[ModelFile, ...]) -> None:
        """Record an exported model and its files."""

    @abstractmethod
    def get_model(self, model_id: str) -> tuple[ModelInfo, tuple[ModelFile, ...]] | None:
        """An exported model and its files, if any."""

    @abstractmethod
    def list_models(self, task_id: str | None = None) -> list[ModelInfo]:
        """Exported models, newest first, optionally only one task's."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

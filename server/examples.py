"""Tasks and the examples devices upload to them."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from autohas_edge.server.accounts import Principal
from autohas_edge.server.domain import Device, ExampleBatch, StoredBatch, Task, now
from autohas_edge.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from autohas_edge.server.store import NO_QUOTA, Quota, Store
from autohas_edge.server.store.base import stored_bytes
from autohas_edge.server.validate import check_batch, check_task


@dataclass
class UploadResult:
    """What one upload stream stored."""

    stored_batch_ids: list[str] = field(default_factory=list)
    duplicate_batch_ids: list[str] = field(default_factory=list)
    examples_stored: int = 0


def batch_digest(batch: ExampleBatch) -> str:
    """SHA-256 over a batch's task, dtype, shape, features and labels: tells a retry from a new batch."""
    h = hashlib.sha256()
    for part in (batch.task_id, str(batch.features.dtype), repr(batch.features.shape)):
        h.update(part.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(batch.features).tobytes())
    h.update(np.ascontiguousarray(batch.labels, dtype="<i8").tobytes())
    return h.hexdigest()


_QUOTA_NAMES = {"device_quota": "the device", "user_quota": "the user", "app_quota": "the app"}


def _limit(quota: Quota, status: str) -> str:
    limit = {
        "device_quota": quota.device_bytes,
        "user_quota": quota.user_bytes,
        "app_quota": quota.app_bytes,
    }[status]
    return f"quota of {limit} bytes"


class Examples:
    """Creates and reads tasks; validates and durably stores uploaded example batches."""

    def __init__(self, store: Store, max_batch_examples: int, quota: Quota = NO_QUOTA) -> None:
        self._store = store
        self._max_batch_examples = max_batch_examples
        self._quota = quota

    def create_task(self, task: Task) -> Task:
        """Create a task (operator only); its id must be new."""
        task = dataclasses.replace(check_task(task), created_at=now())
        if not self._store.add_task(task):
            raise AlreadyExists(f"task.task_id: task {task.task_id!r} already exists")
        return task

    def get_task(self, principal: Principal, task_id: str) -> Task:
        """A task the caller may read."""
        if not task_id:
            raise InvalidArgument("task_id", "required")
        task = self._store.get_task(task_id)
        # another app's task answers exactly as an unknown one: no oracle of which ids exist
        if task is None or not principal.can_read(task):
            raise NotFound(f"task_id: no task {task_id[:128]!r}")
        return task

    def list_tasks(self) -> list[Task]:
        """Every task."""
        return self._store.list_tasks()

    def upload(self, device: Device, batches: Iterable[ExampleBatch]) -> UploadResult:
        """Store each batch durably as it arrives; stops at the first bad one (earlier ones stay stored)."""
        result, count = UploadResult(), 0
        try:
            for batch in batches:
                self._store_one(device, batch, result)
                count += 1
        except InvalidArgument as e:
            raise InvalidArgument(f"batch[{count}].{e.field}", e.detail) from e
        if count == 0:
            raise InvalidArgument("batch", "the upload stream carried no batch")
        return result

    def _store_one(self, device: Device, batch: ExampleBatch, result: UploadResult) -> None:
        task = self.get_task(Principal(device), batch.task_id)
        check_batch(batch, task, self._max_batch_examples)
        x = np.ascontiguousarray(batch.features)
        stored = StoredBatch(
            device.device_id,
            batch.batch_id,
            task.task_id,
            device.app_id,
            device.user_id,
            int(x.shape[0]),
            str(x.dtype),
            x.shape,
            x.tobytes(),
            np.ascontiguousarray(batch.labels, dtype="<i8").tobytes(),
            batch_digest(batch),
            now(),
        )
        status = self._store.add_batch(stored, task.purpose, self._quota)
        if status.endswith("_quota"):
            raise ResourceExhausted(
                f"quota: batch {batch.batch_id!r} ({stored_bytes(stored)} bytes) would take "
                f"{_QUOTA_NAMES[status]} over its {_limit(self._quota, status)} of stored examples; "
                "nothing was stored"
            )
        if status == "no_consent":
            raise FailedPrecondition(
                f"consent: user {device.user_id!r} has no active consent for purpose "
                f"{task.purpose!r} (batch {batch.batch_id!r})"
            )
        if status == "conflict":
            raise AlreadyExists(
                f"batch_id: {batch.batch_id!r} was stored before with different content"
            )
        if status == "stored":
            result.stored_batch_ids.append(batch.batch_id)
            result.examples_stored += stored.count
        else:
            result.duplicate_batch_ids.append(batch.batch_id)

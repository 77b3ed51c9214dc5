"""A job's dataset: the consented examples of its task at its start, frozen into an `.npz`, plus the audit."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np

from autohas_edge.common.fs import atomic_write_npz
from autohas_edge.common.tensor import decode_tensor, dtype_code
from autohas_edge.server.domain import JobAudit, StoredBatch, Task, UserCount, now
from autohas_edge.server.errors import FailedPrecondition
from autohas_edge.server.jobs.files import write_json_atomic
from autohas_edge.server.jobs.retention import owner_arrays
from autohas_edge.server.store import Store


def _arrays(batches: list[StoredBatch], task: Task) -> dict[str, np.ndarray]:
    # stored batches keep the bytes as they were uploaded: the wire codec reads them
    x = np.concatenate(
        [decode_tensor(dtype_code(b.dtype), b.shape, b.features) for b in batches]
    ).astype(np.float32)
    y = np.concatenate([np.frombuffer(b.labels, dtype="<i8") for b in batches]).astype(np.int64)
    arrays: dict[str, np.ndarray] = {"x": x, "y": y, **owner_arrays(batches)}
    # the task fixes its classes and layout: a job never renumbers classes or reguesses the layout
    arrays["num_classes"] = np.array(task.num_classes)
    if task.layout:
        arrays["layout"] = np.array(task.layout)
    if task.label_names:
        arrays["label_names"] = np.array(task.label_names)
    return arrays


def check_cohort(store: Store, task: Task, default_min_users: int) -> None:
    """FailedPrecondition unless the task has consented examples of at least its minimum cohort of
    distinct users (`task.min_users`, else the server's default)."""
    needed = task.min_users or default_min_users
    users = store.count_users(task.task_id, task.purpose)
    if users < needed:
        raise FailedPrecondition(
            f"spec.task_id: task {task.task_id!r} has consented examples of {users} distinct "
            f"user(s); a job needs at least {needed} (its minimum cohort), so that no model is "
            "trained on, or carries statistics of, fewer people"
        )


def take_snapshot(store: Store, task: Task, job_id: str, dataset: Path) -> JobAudit:
    """Write the task's consented examples to `dataset` (x float32, y int64, label_names, row owners) and
    audit them.

    The audit and `audit.json` beside the dataset list every user and batch used; both are written before
    the job starts, so what a job saw is on record even if it later fails.
    """
    snap = store.snapshot(task.task_id, task.purpose)
    if not snap.batches:
        raise FailedPrecondition(
            f"spec.task_id: task {task.task_id!r} has no examples with active consent"
        )
    dataset.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    arrays = _arrays(snap.batches, task)
    atomic_write_npz(dataset, arrays)
    counts = Counter[tuple[str, str]]()
    for b in snap.batches:
        counts[(b.app_id, b.user_id)] += b.count
    users = tuple(
        UserCount(app, user, n, snap.consent_versions[(app, user)])
        for (app, user), n in sorted(counts.items())
    )
    audit = JobAudit(job_id, task.task_id, task.purpose, now(), users)
    manifest = {
        "job_id": job_id,
        "task_id": task.task_id,
        "purpose": task.purpose,
        "snapshot_at": audit.snapshot_at,
        "total_examples": audit.total_examples,
        "users": [dataclasses.asdict(u) for u in users],
        "batches": [
            {
                "device_id": b.device_id,
                "batch_id": b.batch_id,
                "app_id": b.app_id,
                "user_id": b.user_id,
                "examples": b.count,
                "digest": b.digest,
            }
            for b in snap.batches
        ],
    }
    write_json_atomic(dataset.with_name("audit.json"), manifest)
    return audit

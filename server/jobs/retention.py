"""What happens to a job's data snapshot when a user in it revokes consent.

A job's snapshot `jobs/<id>/dataset.npz` holds the examples of the users who had active consent when the
job started (`x`, `y`, `label_names`), and each row's owner (`row_owner` indexes `owner_app` /
`owner_user`; the search engine ignores these arrays). Revoking consent deletes the user's examples from
the store at once; this module does the same for the snapshots:

- **Not running**: every snapshot of the purpose's tasks that holds the user's rows and belongs to a job
  that is not running is rewritten without them at once, atomically (private temp file, fsync, rename).
- **Running**: a running job's worker already holds its data in memory, and a job uses the data consented
  at its start, so the rows leave the file as soon as the worker exits (finished, failed, cancelled,
  server shutdown), or at the next server start if the server died.
- **Durable**: the removal is recorded in `purge.json` *before* the revocation commits, so no crash can
  lose it. A crash between the two removes snapshot rows of a user whose revocation was never
  acknowledged; that is the safe side, and the user's stored examples are untouched by it.
- **Empty**: a snapshot with no rows left is deleted. Its job cannot be exported again (export reads the
  snapshot for int8 calibration and reference inputs) and says so; an unfinished one fails on its next
  start with that reason instead of resuming.
- **Full disk**: a snapshot that cannot be rewritten without the user's rows for lack of room is
  deleted instead (the rows must go), as if it were empty; temp files of interrupted writes are swept
  at every revocation and at start.
- **Unfinished jobs restart**: an unfinished job whose snapshot lost rows drops its run directory, so its
  search starts again on the remaining data instead of resuming a checkpoint trained on the removed rows.
- **Models are retained** (the `retain` policy): a model trained or exported from the job before a
  user revoked stays and is served, since consent was valid when it was trained; the job's audit
  records the revocation (`consent_revoked_at` of that user, `with_revocations`). A new job (a new
  export) no longer sees the user's data.
- **Kept**: the audit (which users, how many examples, which consent text) and `audit.json`'s batch list
  (ids and digests, no example values) stay as the record of what the job used with consent; `purge.json`
  records each removal. Models already trained or exported from the job are not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.common.fs import atomic_write_npz, fsync_dir
from autohas_edge.server.domain import JobAudit, StoredBatch, now
from autohas_edge.server.jobs.files import write_json_atomic
from autohas_edge.server.store.base import FULL_ERRNOS, Store

log = logging.getLogger(__name__)

DATASET = "dataset.npz"
PURGE_FILE = "purge.json"
UserKey = tuple[str, str]  # (app_id, user_id)


def with_revocations(store: Store, audit: JobAudit) -> JobAudit:
    """The audit with each user's revocation (after the snapshot) of the consent the job used."""
    users = []
    for u in audit.users:
        used = [
            c
            for c in store.list_consents(u.app_id, u.user_id)
            if c.purpose == audit.purpose and c.granted_at <= audit.snapshot_at
        ]  # newest first: the first is the consent in force at the snapshot
        revoked = used[0].revoked_at if used else None
        users.append(dataclasses.replace(u, revoked_at=revoked))
    return dataclasses.replace(audit, users=tuple(users))


def owner_arrays(batches: Sequence[StoredBatch]) -> dict[str, np.ndarray]:
    """Each row's owner for a snapshot of these batches: `row_owner[i]` indexes `owner_app` / `owner_user`."""
    owners: dict[UserKey, int] = {}
    ids = [owners.setdefault((b.app_id, b.user_id), len(owners)) for b in batches]
    rows = np.repeat(np.asarray(ids, dtype=np.int32), [b.count for b in batches])
    return {
        "row_owner": rows,
        "owner_app": np.asarray([app for app, _ in owners], dtype=str),
        "owner_user": np.asarray([user for _, user in owners], dtype=str),
    }


def _read_log(job_dir: Path) -> dict[str, Any]:
    path = job_dir / PURGE_FILE
    if not path.exists():
        return {"pending": [], "done": [], "snapshot_deleted": False}
    log: dict[str, Any] = json.loads(path.read_text())
    return log


def request_purge(job_dir: Path, users: Iterable[UserKey]) -> None:
    """Durably record that these users' rows must leave the job's snapshot."""
    log = _read_log(job_dir)
    pending = {tuple(u) for u in log["pending"]}
    log["pending"] = sorted(pending | {tuple(u) for u in users})
    write_json_atomic(job_dir / PURGE_FILE, log)


def has_pending(job_dir: Path) -> bool:
    """Whether a removal is recorded but not yet applied."""
    return bool(_read_log(job_dir)["pending"])


def snapshot_deleted(job_dir: Path) -> bool:
    """Whether the job's snapshot was deleted because every user in it revoked consent."""
    return bool(_read_log(job_dir)["snapshot_deleted"])


def apply_purges(job_dir: Path) -> int:
    """Remove the pending users' rows from the snapshot (deleted when none are left); returns rows removed.

    Idempotent: a crash after the snapshot was rewritten but before `purge.json` was updated only repeats
    a removal that finds nothing left to remove.
    """
    log = _read_log(job_dir)
    if not log["pending"]:
        return 0
    pending = {(str(a), str(u)) for a, u in log["pending"]}
    dataset = job_dir / DATASET
    removed, left = _remove_rows(dataset, pending) if dataset.exists() else ({}, 0)
    at = now()
    log["done"] += [
        {"app_id": a, "user_id": u, "rows_removed": removed.get((a, u), 0), "at": at}
        for a, u in sorted(pending)
    ]
    log["pending"] = []
    if dataset.exists() and left == 0:
        os.unlink(dataset)
        fsync_dir(job_dir)
        log["snapshot_deleted"] = True
    write_json_atomic(job_dir / PURGE_FILE, log)
    return sum(removed.values())


def _remove_rows(dataset: Path, users: set[UserKey]) -> tuple[dict[UserKey, int], int]:
    """Rewrite the snapshot without these users' rows; returns the rows removed a user and the rows left."""
    with np.load(dataset, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if (
        "row_owner" not in arrays
    ):  # a snapshot that does not say whose rows are whose: none can stay
        return {}, 0
    owners = list(zip(arrays["owner_app"].tolist(), arrays["owner_user"].tolist(), strict=True))
    doomed = np.array([owner in users for owner in owners], dtype=bool)
    rows = arrays["row_owner"]
    counts = np.bincount(rows, minlength=len(owners))
    removed = {owners[i]: int(counts[i]) for i in np.flatnonzero(doomed) if counts[i]}
    if not removed:
        return {}, len(rows)
    keep = ~doomed[rows]
    renumber = (
        np.cumsum(~doomed, dtype=np.int32) - 1
    )  # old owner index -> index among the kept owners
    arrays.update(
        {
            "x": arrays["x"][keep],
            "y": arrays["y"][keep],
            "row_owner": renumber[rows[keep]],
            "owner_app": arrays["owner_app"][~doomed],
            "owner_user": arrays["owner_user"][~doomed],
        }
    )
    if keep.any():
        try:
            atomic_write_npz(dataset, arrays)
        except OSError as e:
            if e.errno not in FULL_ERRNOS:
                raise
            # no room for the snapshot without these rows: the rows must go, so the snapshot goes
            log.warning("no room to rewrite %s without revoked rows; deleting it (%s)", dataset, e)
            return removed, 0
    return removed, int(keep.sum())

"""The device's durable state: an upload queue and a few settings, in one SQLite file.

Every write is one transaction with `synchronous=FULL`, so a batch acknowledged by `put` survives a
crash or SIGKILL, and a batch is removed only after the server confirmed it stored it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.device_sdk.errors import StateDirError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,
    features BLOB NOT NULL,
    labels BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def private_directory(path: Path) -> None:
    """Create `path` 0700, or tighten an existing one of this user's to 0700.

    StateDirError for a directory other users may share (world-writable with the sticky bit, like
    /tmp, or owned by someone else): the SDK's state needs a directory of its own.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if not info.st_mode & 0o077:
        return
    if info.st_mode & stat.S_ISVTX or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise StateDirError(
            f"state_dir {path} is shared (mode {stat.S_IMODE(info.st_mode):o}, owner uid "
            f"{info.st_uid}): give the SDK a directory of its own for the device token"
        )
    os.chmod(path, 0o700)


@dataclass(frozen=True)
class QueuedBatch:
    """One batch waiting for upload; `batch_id` is fixed at enqueue time and reused on every retry."""

    batch_id: str
    task_id: str
    purpose: str
    features: np.ndarray
    labels: np.ndarray
    attempts: int


class Outbox:
    """Durable upload queue plus key/value settings (device id, token, consent, task cache)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_directory(self.path.parent)
        # the device token lives here: the owner alone may read it (SQLite gives the WAL and SHM
        # files the database file's mode)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- queue --------------------------------------------------------------------------------------

    def put(self, task_id: str, purpose: str, features: np.ndarray, labels: np.ndarray) -> str:
        """Store one batch durably; returns its new batch id."""
        batch_id = uuid.uuid4().hex
        feats = np.ascontiguousarray(features)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO batches (batch_id, task_id, purpose, dtype, shape, features, labels, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch_id,
                    task_id,
                    purpose,
                    feats.dtype.str,
                    json.dumps(feats.shape),
                    feats.tobytes(),
                    np.asarray(labels, dtype="<i8").tobytes(),
                    time.time(),
                ),
            )
        return batch_id

    def pending(self, limit: int | None = None) -> list[QueuedBatch]:
        """Batches waiting for upload, oldest first."""
        sql = (
            "SELECT batch_id, task_id, purpose, dtype, shape, features, labels, attempts FROM batches"
            " WHERE state = 'pending' ORDER BY seq LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (-1 if limit is None else limit,)).fetchall()
        return [_batch(row) for row in rows]

    def count(self, state: str = "pending") -> int:
        """Number of batches in a state ("pending" or "rejected")."""
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM batches WHERE state = ?", (state,)
                ).fetchone()[0]
            )

    def remove(self, batch_ids: Iterable[str]) -> int:
        """Forget batches the server confirmed it stores."""
        ids = list(batch_ids)
        with self._transaction() as db:
            return sum(
                db.execute("DELETE FROM batches WHERE batch_id = ?", (b,)).rowcount for b in ids
            )

    def record_failure(self, batch_ids: Iterable[str], error: str, *, reject: bool = False) -> None:
        """Count a failed attempt; `reject` parks a batch the server refused, so it blocks no others."""
        state = "rejected" if reject else "pending"
        with self._transaction() as db:
            for b in batch_ids:
                db.execute(
                    "UPDATE batches SET attempts = attempts + 1, last_error = ?, state = ?"
                    " WHERE batch_id = ?",
                    (error[:500], state, b),
                )

    def purge(self, purpose: str | None = None) -> int:
        """Delete queued batches (of one consent purpose, or all): what a consent revocation asks for."""
        with self._transaction() as db:
            if purpose is None:
                return db.execute("DELETE FROM batches").rowcount
            return db.execute("DELETE FROM batches WHERE purpose = ?", (purpose,)).rowcount

    # -- settings -----------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """A stored JSON setting, or `default`."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        """Store a JSON setting durably."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                (key, json.dumps(value)),
            )

    def keys(self, prefix: str) -> list[str]:
        """Setting keys that start with `prefix`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            )
            return [row[0] for row in rows.fetchall()]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _batch(row: tuple[Any, ...]) -> QueuedBatch:
    batch_id, task_id, purpose, dtype, shape, features, labels, attempts = row
    x = np.frombuffer(features, dtype=np.dtype(dtype)).reshape(json.loads(shape))
    return QueuedBatch(
        batch_id, task_id, purpose, x, np.frombuffer(labels, dtype="<i8"), int(attempts)
    )

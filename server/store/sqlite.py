"""The durable store: one SQLite file in WAL mode, a connection per thread, every write fsynced."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autohas_edge.server.domain import (
    Consent,
    Device,
    Job,
    JobAudit,
    ModelFile,
    ModelInfo,
    StoredBatch,
    Task,
    UserCount,
)
from autohas_edge.server.store.base import (
    NO_QUOTA,
    AddStatus,
    Quota,
    Snapshot,
    StorageFull,
    Store,
    stored_bytes,
)
from autohas_edge.server.store.schema import migrate

log = logging.getLogger(__name__)
_BATCH_COLUMNS = (
    "device_id, batch_id, task_id, app_id, user_id, count, dtype, shape, features, labels, "
    "digest, created_at, bytes"
)


def _full(error: sqlite3.Error) -> bool:
    """Whether SQLite failed for lack of room (SQLITE_FULL: the disk or a quota is full)."""
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _over_quota(c: sqlite3.Connection, batch: StoredBatch, quota: Quota) -> AddStatus | None:
    """The first quota that storing `batch` would exceed, if any."""
    size = stored_bytes(batch)
    for status, limit, columns in quota.scopes(batch):
        where = " AND ".join(f"{column} = ?" for column in columns)
        used = c.execute(
            f"SELECT COALESCE(SUM(bytes), 0) FROM examples WHERE {where}", tuple(columns.values())
        ).fetchone()[0]
        if used + size > limit:
            return status
    return None


def _consent(row: sqlite3.Row) -> Consent:
    return Consent(
        row["app_id"],
        row["user_id"],
        row["purpose"],
        row["consent_text_version"],
        row["granted_at"],
        row["revoked_at"],
    )


def _batch(row: sqlite3.Row) -> StoredBatch:
    return StoredBatch(
        row["device_id"],
        row["batch_id"],
        row["task_id"],
        row["app_id"],
        row["user_id"],
        row["count"],
        row["dtype"],
        tuple(json.loads(row["shape"])),
        bytes(row["features"]),
        bytes(row["labels"]),
        row["digest"],
        row["created_at"],
    )


class SqliteStore(Store):
    """`Store` on a SQLite file: WAL (readers never wait for the writer), synchronous=FULL, secure_delete."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # people's data: readable by the server's user only. Created 0600 before SQLite opens it,
        # since SQLite gives the -wal and -shm files it makes the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        migrate(self._conn())
        for suffix in ("-wal", "-shm"):  # made by an older server with the default mode
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(
                "PRAGMA synchronous = FULL"
            )  # a commit is on disk before we acknowledge it
            conn.execute("PRAGMA foreign_keys = ON")
            # A revoked user's examples are overwritten on disk, not just unlinked from the b-tree.
            conn.execute("PRAGMA secure_delete = ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front, so it never fails on upgrade."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            # SQLite rolls some failures back itself (a full disk mid-statement) and leaves others open
            # (a full disk at COMMIT): end the transaction either way, or this thread's connection could
            # never start another one.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error) and _full(e):
                raise StorageFull("the change", str(e)) from e
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute(sql, args).fetchone()
        return row

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    # devices -------------------------------------------------------------------------------------
    def add_device(self, device: Device) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    device.device_id,
                    device.app_id,
                    device.user_id,
                    device.name,
                    device.token_hash,
                    device.created_at,
                    device.revoked_at,
                ),
            )

    def get_device(self, device_id: str) -> Device | None:
        row = self._one("SELECT * FROM devices WHERE device_id = ?", device_id)
        return None if row is None else Device(*tuple(row))

    def revoke_device(self, device_id: str, at: float) -> Device | None:
        with self._write() as c:
            c.execute(
                "UPDATE devices SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                (at, device_id),
            )
            row = c.execute("SELECT * FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return None if row is None else Device(*tuple(row))

    def use_ticket(self, digest: str, expires_at: float, now: float) -> bool:
        with self._write() as c:
            c.execute("DELETE FROM used_tickets WHERE expires_at <= ?", (now,))
            cur = c.execute(
                "INSERT OR IGNORE INTO used_tickets VALUES (?, ?)", (digest, expires_at)
            )
            return cur.rowcount == 1

    # consents ------------------------------------------------------------------------------------
    def grant_consent(self, consent: Consent) -> Consent:
        key = (consent.app_id, consent.user_id, consent.purpose)
        with self._write() as c:
            row = c.execute(
                "SELECT * FROM consents WHERE app_id = ? AND user_id = ? AND purpose = ? "
                "AND revoked_at IS NULL",
                key,
            ).fetchone()
            if row is not None and row["consent_text_version"] == consent.consent_text_version:
                return _consent(row)
            if row is not None:
                c.execute(
                    "UPDATE consents SET revoked_at = ? WHERE id = ?",
                    (consent.granted_at, row["id"]),
                )
            c.execute(
                "INSERT INTO consents (app_id, user_id, purpose, consent_text_version, granted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (*key, consent.consent_text_version, consent.granted_at),
            )
        return Consent(*key, consent.consent_text_version, consent.granted_at)

    def revoke_consent(
        self, app_id: str, user_id: str, purpose: str, at: float
    ) -> tuple[Consent | None, int]:
        with self._write() as c:
            c.execute(
                "UPDATE consents SET revoked_at = ? WHERE app_id = ? AND user_id = ? AND purpose = ? "
                "AND revoked_at IS NULL",
                (at, app_id, user_id, purpose),
            )
            where = (
                "WHERE app_id = ? AND user_id = ? "
                "AND task_id IN (SELECT task_id FROM tasks WHERE purpose = ?)"
            )
            args = (app_id, user_id, purpose)
            deleted = c.execute(
                f"SELECT COALESCE(SUM(count), 0) FROM examples {where}", args
            ).fetchone()[0]
            c.execute(f"DELETE FROM examples {where}", args)
            row = c.execute(
                "SELECT * FROM consents WHERE app_id = ? AND user_id = ? AND purpose = ? "
                "ORDER BY id DESC LIMIT 1",
                (app_id, user_id, purpose),
            ).fetchone()
        if deleted:
            self._truncate_wal()
        return (None if row is None else _consent(row)), int(deleted)

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database and empty it: until then the WAL still holds the page images of
        deleted examples (secure_delete zeroes them only in the database file)."""
        busy = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if (
            busy
        ):  # a reader held an old snapshot for the whole busy timeout; the next revocation retries
            log.warning(
                "could not empty the WAL after a revocation (readers busy); it is retried later"
            )

    def list_consents(self, app_id: str, user_id: str) -> list[Consent]:
        rows = self._all(
            "SELECT * FROM consents WHERE app_id = ? AND user_id = ? ORDER BY id DESC",
            app_id,
            user_id,
        )
        return [_consent(r) for r in rows]

    # tasks ---------------------------------------------------------------------------------------
    def add_task(self, task: Task) -> bool:
        with self._write() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?)",
                (task.task_id, task.purpose, json.dumps(task.to_dict()), task.created_at),
            )
            return cur.rowcount == 1

    def get_task(self, task_id: str) -> Task | None:
        row = self._one("SELECT record FROM tasks WHERE task_id = ?", task_id)
        return None if row is None else Task.from_dict(json.loads(row["record"]))

    def list_tasks(self) -> list[Task]:
        rows = self._all("SELECT record FROM tasks ORDER BY created_at, task_id")
        return [Task.from_dict(json.loads(r["record"])) for r in rows]

    # examples ------------------------------------------------------------------------------------
    def add_batch(self, batch: StoredBatch, purpose: str, quota: Quota = NO_QUOTA) -> AddStatus:
        with self._write() as c:
            consent = c.execute(
                "SELECT 1 FROM consents WHERE app_id = ? AND user_id = ? AND purpose = ? "
                "AND revoked_at IS NULL",
                (batch.app_id, batch.user_id, purpose),
            ).fetchone()
            if consent is None:
                return "no_consent"
            row = c.execute(
                "SELECT digest FROM examples WHERE device_id = ? AND batch_id = ?",
                (batch.device_id, batch.batch_id),
            ).fetchone()
            if row is not None:
                return "duplicate" if row["digest"] == batch.digest else "conflict"
            over = _over_quota(c, batch, quota)
            if over is not None:
                return over
            c.execute(
                f"INSERT INTO examples ({_BATCH_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                (
                    batch.device_id,
                    batch.batch_id,
                    batch.task_id,
                    batch.app_id,
                    batch.user_id,
                    batch.count,
                    batch.dtype,
                    json.dumps(list(batch.shape)),
                    batch.features,
                    batch.labels,
                    batch.digest,
                    batch.created_at,
                    stored_bytes(batch),
                ),
            )
        return "stored"

    def count_examples(
        self, task_id: str, app_id: str | None = None, user_id: str | None = None
    ) -> int:
        sql, args = "SELECT COALESCE(SUM(count), 0) FROM examples WHERE task_id = ?", [task_id]
        for column, value in (("app_id", app_id), ("user_id", user_id)):
            if value is not None:
                sql, args = f"{sql} AND {column} = ?", [*args, value]
        return int(self._conn().execute(sql, args).fetchone()[0])

    def count_users(self, task_id: str, purpose: str) -> int:
        row = self._one(
            "SELECT COUNT(*) FROM (SELECT DISTINCT e.app_id, e.user_id FROM examples e JOIN consents c "
            "ON c.app_id = e.app_id AND c.user_id = e.user_id AND c.purpose = ? "
            "AND c.revoked_at IS NULL WHERE e.task_id = ?)",
            purpose,
            task_id,
        )
        return 0 if row is None else int(row[0])

    def snapshot(self, task_id: str, purpose: str) -> Snapshot:
        with self._read() as c:
            rows = c.execute(
                "SELECT e.*, c.consent_text_version FROM examples e JOIN consents c "
                "ON c.app_id = e.app_id AND c.user_id = e.user_id AND c.purpose = ? "
                "AND c.revoked_at IS NULL WHERE e.task_id = ? ORDER BY e.rowid",
                (purpose, task_id),
            ).fetchall()
        versions = {(r["app_id"], r["user_id"]): r["consent_text_version"] for r in rows}
        return Snapshot([_batch(r) for r in rows], versions)

    # jobs and audits -----------------------------------------------------------------------------
    def put_job(self, job: Job) -> None:
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.spec.task_id,
                    job.state.value,
                    job.created_at,
                    json.dumps(job.to_dict()),
                ),
            )

    def get_job(self, job_id: str) -> Job | None:
        row = self._one("SELECT record FROM jobs WHERE job_id = ?", job_id)
        return None if row is None else Job.from_dict(json.loads(row["record"]))

    def list_jobs(self, task_id: str | None = None) -> list[Job]:
        if task_id is None:
            rows = self._all("SELECT record FROM jobs ORDER BY created_at, job_id")
        else:
            rows = self._all(
                "SELECT record FROM jobs WHERE task_id = ? ORDER BY created_at, job_id", task_id
            )
        return [Job.from_dict(json.loads(r["record"])) for r in rows]

    def put_audit(self, audit: JobAudit) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO audits VALUES (?, ?, ?, ?)",
                (audit.job_id, audit.task_id, audit.purpose, audit.snapshot_at),
            )
            c.executemany(
                "INSERT INTO audit_users VALUES (?, ?, ?, ?, ?)",
                [
                    (audit.job_id, u.app_id, u.user_id, u.examples, u.consent_text_version)
                    for u in audit.users
                ],
            )

    def get_audit(self, job_id: str) -> JobAudit | None:
        with self._read() as c:
            row = c.execute("SELECT * FROM audits WHERE job_id = ?", (job_id,)).fetchone()
            users = c.execute(
                "SELECT * FROM audit_users WHERE job_id = ? ORDER BY app_id, user_id", (job_id,)
            ).fetchall()
        if row is None:
            return None
        counts = tuple(
            UserCount(u["app_id"], u["user_id"], u["examples"], u["consent_text_version"])
            for u in users
        )
        return JobAudit(row["job_id"], row["task_id"], row["purpose"], row["snapshot_at"], counts)

    # models --------------------------------------------------------------------------------------
    def add_model(self, info: ModelInfo, files: tuple[ModelFile, ...]) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                (
                    info.model_id,
                    info.task_id,
                    info.job_id,
                    json.dumps(list(info.formats)),
                    info.created_at,
                ),
            )
            c.executemany(
                "INSERT INTO model_files VALUES (?, ?, ?, ?)",
                [(info.model_id, f.path, f.sha256, f.bytes) for f in files],
            )

    def get_model(self, model_id: str) -> tuple[ModelInfo, tuple[ModelFile, ...]] | None:
        with self._read() as c:
            row = c.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
            files = c.execute(
                "SELECT path, sha256, bytes FROM model_files WHERE model_id = ? ORDER BY path",
                (model_id,),
            ).fetchall()
        if row is None:
            return None
        return _model(row), tuple(ModelFile(*tuple(f)) for f in files)

    def list_models(self, task_id: str | None = None) -> list[ModelInfo]:
        order = "ORDER BY created_at DESC, model_id"
        if task_id is None:
            return [_model(r) for r in self._all(f"SELECT * FROM models {order}")]
        return [
            _model(r) for r in self._all(f"SELECT * FROM models WHERE task_id = ? {order}", task_id)
        ]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def _model(row: sqlite3.Row) -> ModelInfo:
    return ModelInfo(
        row["model_id"],
        row["task_id"],
        row["job_id"],
        tuple(json.loads(row["formats"])),
        row["created_at"],
    )

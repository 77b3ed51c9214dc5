"""The SQLite schema, versioned in `PRAGMA user_version`; a release appends migrations, never edits one."""

from __future__ import annotations

import sqlite3

#: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT NOT NULL,
        token_hash TEXT NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE consents (
        id INTEGER PRIMARY KEY AUTOINCREMENT, app_id TEXT NOT NULL, user_id TEXT NOT NULL,
        purpose TEXT NOT NULL, consent_text_version TEXT NOT NULL, granted_at REAL NOT NULL,
        revoked_at REAL);
    CREATE INDEX consents_by_user ON consents (app_id, user_id, purpose);
    CREATE UNIQUE INDEX consents_one_active ON consents (app_id, user_id, purpose) WHERE revoked_at IS NULL;
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, purpose TEXT NOT NULL, record TEXT NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE examples (
        device_id TEXT NOT NULL, batch_id TEXT NOT NULL, task_id TEXT NOT NULL REFERENCES tasks,
        app_id TEXT NOT NULL, user_id TEXT NOT NULL, count INTEGER NOT NULL, dtype TEXT NOT NULL,
        shape TEXT NOT NULL, features BLOB NOT NULL, labels BLOB NOT NULL, digest TEXT NOT NULL,
        created_at REAL NOT NULL, PRIMARY KEY (device_id, batch_id));
    CREATE INDEX examples_by_task ON examples (task_id, app_id, user_id);
    CREATE INDEX examples_by_user ON examples (app_id, user_id);
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
        record TEXT NOT NULL);
    CREATE INDEX jobs_by_task ON jobs (task_id, created_at);
    CREATE TABLE audits (
        job_id TEXT PRIMARY KEY REFERENCES jobs, task_id TEXT NOT NULL, purpose TEXT NOT NULL,
        snapshot_at REAL NOT NULL);
    CREATE TABLE audit_users (
        job_id TEXT NOT NULL REFERENCES audits, app_id TEXT NOT NULL, user_id TEXT NOT NULL,
        examples INTEGER NOT NULL, consent_text_version TEXT NOT NULL,
        PRIMARY KEY (job_id, app_id, user_id));
    CREATE TABLE models (
        model_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, job_id TEXT NOT NULL, formats TEXT NOT NULL,
        created_at REAL NOT NULL);
    CREATE INDEX models_by_task ON models (task_id, created_at);
    CREATE TABLE model_files (
        model_id TEXT NOT NULL REFERENCES models, path TEXT NOT NULL, sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL, PRIMARY KEY (model_id, path));
    """,
    # 2: stored bytes per batch (quotas), device token revocation, single-use enrollment tickets
    """
    ALTER TABLE examples ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE examples SET bytes = length(features) + length(labels);
    CREATE INDEX examples_by_app ON examples (app_id);
    ALTER TABLE devices ADD COLUMN revoked_at REAL;
    CREATE TABLE used_tickets (digest TEXT PRIMARY KEY, expires_at REAL NOT NULL);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer release than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Apply the pending migrations up to `target` (default: all), each atomically; returns the version."""
    version, latest = schema_version(conn), len(MIGRATIONS)
    if version > latest:
        raise SchemaTooNew(f"database schema v{version} is newer than this server's v{latest}")
    for step in range(version, latest if target is None else target):
        # executescript commits first; BEGIN ... COMMIT makes the migration and its version bump atomic.
        try:
            script = (
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[step]}\nPRAGMA user_version = {step + 1};\nCOMMIT;"
            )
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return schema_version(conn)

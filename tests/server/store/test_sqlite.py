"""What only the durable store promises: schema versioning, WAL, fsynced commits, data kept on reopen."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from autohas_edge.server.domain import Consent, StoredBatch, Task
from autohas_edge.server.store import DB_FILE, open_store
from autohas_edge.server.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaTooNew,
    migrate,
    schema_version,
)
from autohas_edge.server.store.sqlite import SqliteStore

T0 = 1_700_000_000.0


def test_a_new_database_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    store = open_store("sqlite", tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        assert schema_version(conn) == SCHEMA_VERSION == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "devices",
        "consents",
        "tasks",
        "examples",
        "jobs",
        "audits",
        "audit_users",
        "models",
    } <= tables
    assert stat.S_IMODE((tmp_path / DB_FILE).stat().st_mode) == 0o600


def test_migration_steps_apply_in_order_and_are_idempotent(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert migrate(conn, target=0) == 0
    assert migrate(conn) == SCHEMA_VERSION
    assert migrate(conn) == SCHEMA_VERSION  # nothing pending: no error, no change
    conn.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer"):
        SqliteStore(tmp_path / DB_FILE)


def test_a_failed_migration_leaves_the_database_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    migrate(conn)
    broken = "CREATE TABLE t (a); SELECT nonsense("
    monkeypatch.setattr("autohas_edge.server.store.schema.MIGRATIONS", [*MIGRATIONS, broken])
    with pytest.raises(sqlite3.Error):
        migrate(conn)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 't'").fetchone()[0] == 0
    conn.close()


def test_everything_committed_is_there_after_reopening(tmp_path: Path) -> None:
    store = open_store("sqlite", tmp_path)
    store.add_task(Task("t1", ("app",), "p", (2,), "float32", 2, (), T0))
    store.grant_consent(Consent("app", "u1", "p", "v1", T0))
    payload = bytes(range(8))
    labels = b"\1" + b"\0" * 7
    stored = StoredBatch(
        "d1", "b1", "t1", "app", "u1", 1, "float32", (1, 2), payload, labels, "h", T0
    )
    assert store.add_batch(stored, "p") == "stored"
    store.close()
    reopened = open_store("sqlite", tmp_path)
    assert reopened.snapshot("t1", "p").batches == [stored]
    reopened.close()


def test_revoked_examples_are_overwritten_on_disk(tmp_path: Path) -> None:
    """secure_delete: a revoked user's bytes do not linger in free pages of the database file."""
    store = open_store("sqlite", tmp_path)
    store.add_task(Task("t1", ("app",), "p", (64,), "uint8", 2, (), T0))
    store.grant_consent(Consent("app", "u1", "p", "v1", T0))
    marker = b"PRIVATE-MARKER-" * 4 + b"!!!!"
    stored = StoredBatch(
        "d1", "b1", "t1", "app", "u1", 1, "uint8", (1, 64), marker, b"\0" * 8, "h", T0
    )
    store.add_batch(stored, "p")
    store.revoke_consent("app", "u1", "p", T0 + 1)
    store.close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert marker not in (tmp_path / DB_FILE).read_bytes()

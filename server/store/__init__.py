"""Stores of the server's state, picked by name: "sqlite" (durable, default) or "memory"."""

from __future__ import annotations

from pathlib import Path

from autohas_edge.server.store.base import NO_QUOTA, AddStatus, Quota, Snapshot, Store, UserKey

DB_FILE = "autohas.sqlite3"

__all__ = [
    "DB_FILE",
    "NO_QUOTA",
    "AddStatus",
    "Quota",
    "Snapshot",
    "Store",
    "UserKey",
    "open_store",
]


def open_store(kind: str, data_dir: Path) -> Store:
    """Open the store called `kind` under `data_dir` (imported lazily)."""
    if kind == "sqlite":
        from autohas_edge.server.store.sqlite import SqliteStore

        return SqliteStore(Path(data_dir) / DB_FILE)
    if kind == "memory":
        from autohas_edge.server.store.memory import MemoryStore

        return MemoryStore()
    raise ValueError(f"store: unknown kind {kind!r} (expected 'sqlite' or 'memory')")

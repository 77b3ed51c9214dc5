"""The job directories' JSON files: atomic, durable and private (people's data lives beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autohas_edge.common.fs import atomic_write_json


def write_json_atomic(path: Path, value: Any) -> None:
    """Atomically write a private JSON document in the job directories' format (indent 1)."""
    atomic_write_json(path, value, indent=1)


def sweep_temp_files(directory: Path, recursive: bool = False) -> int:
    """Delete the `*.tmp` files an interrupted atomic write left in `directory`; returns how many.

    Such a file may hold a half-written snapshot with the rows of a user who has since revoked consent,
    so start-up and every revocation sweep them (never while a write to that directory may run).
    """
    if not directory.is_dir():
        return 0
    found = directory.rglob("*.tmp") if recursive else directory.glob("*.tmp")
    removed = 0
    for path in found:
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed

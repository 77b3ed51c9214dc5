"""Durable, private file writes for the job directories (people's data lives in some of them)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

PRIVATE_FILE_MODE = 0o600


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` via a private temp file, fsync it, rename it into place and fsync the directory.

    A crash leaves either the old file or the new one, never a mix; the file is readable by the server's
    user only.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def write_json_atomic(path: Path, value: Any) -> None:
    """`write_atomic` of a JSON document."""
    data = json.dumps(value, indent=1).encode()

    def write(f: IO[bytes]) -> None:
        f.write(data)

    write_atomic(path, write)


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or unlink inside it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Files that survive crashes: sha256 of a file, atomic + durable writes, directory fsync."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

#: the mode of every atomically written file unless a caller asks for another: people's data, tokens
#: and keys live in some of them, so the owner alone may read them
PRIVATE_FILE_MODE = 0o600
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that a rename, a new file or an unlink inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[IO[bytes]], object],
    *,
    mode: int = PRIVATE_FILE_MODE,
) -> None:
    """Write `path` through `write(f)` so that a crash leaves the old file or the new one, never a mix.

    A private temp file in the same directory (a rename is atomic only within one file system) is
    written, flushed and fsynced, renamed over `path`, and the directory fsynced (else the rename
    itself may be lost at a power cut).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode != PRIVATE_FILE_MODE:  # mkstemp made it private; relax only when asked to
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE_FILE_MODE
) -> None:
    """`atomic_write` of a bytes value."""
    atomic_write(path, lambda f: f.write(data), mode=mode)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, mode: int = PRIVATE_FILE_MODE
) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write_bytes(path, text.encode(), mode=mode)


def atomic_write_json(
    path: str | os.PathLike[str],
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    mode: int = PRIVATE_FILE_MODE,
) -> None:
    """`atomic_write` of `value` as JSON text and a final newline (`json.dumps` options as given)."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default) + "\n"
    atomic_write_text(path, text, mode=mode)


def atomic_write_npz(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    *,
    mode: int = PRIVATE_FILE_MODE,
) -> None:
    """`atomic_write` of named arrays as an uncompressed `.npz`."""
    # a mapping, not **kwargs: an array named "mode" or "path" must not become an argument
    named: dict[str, Any] = dict(arrays)  # Any: numpy's stub would take a name for allow_pickle
    atomic_write(path, lambda f: np.savez(f, **named), mode=mode)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """Read a JSON file, or return `default` when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(inode, mtime in ns) of a file, (0, 0) if missing: changes whenever an atomic write replaces it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return (st.st_ino, st.st_mtime_ns)

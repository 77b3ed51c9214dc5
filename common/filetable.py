"""The file table of a model bundle: `manifest["files"]` maps every file to its sha256 and size."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from autohas_edge.common.fs import sha256_file

MANIFEST = "manifest.json"


class FileEntry(NamedTuple):
    """One row of a file table (a tuple, so it compares equal to `(sha256, bytes)`)."""

    sha256: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        """The row as the manifest stores it: `{"sha256": ..., "bytes": ...}`."""
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FileEntry:
        """Inverse of `to_json`; KeyError, TypeError or ValueError when `raw` is not such a row."""
        return cls(str(raw["sha256"]), int(raw["bytes"]))


def file_entry(path: str | Path) -> FileEntry:
    """The sha256 and size of a file."""
    return FileEntry(sha256_file(path), Path(path).stat().st_size)


def files_table(bundle: Path, *, with_manifest: bool = False) -> dict[str, FileEntry]:
    """Every regular file under `bundle` (symlinks left out) by relative POSIX path, sorted.

    The manifest itself is left out unless `with_manifest`: it cannot list its own hash.
    """
    paths = sorted(p for p in Path(bundle).rglob("*") if p.is_file() and not p.is_symlink())
    return {
        p.relative_to(bundle).as_posix(): file_entry(p)
        for p in paths
        if with_manifest or p.relative_to(bundle).as_posix() != MANIFEST
    }


def table_to_json(table: Mapping[str, FileEntry]) -> dict[str, dict[str, Any]]:
    """A file table as the manifest's `files` value."""
    return {name: entry.to_json() for name, entry in table.items()}


def table_from_json(raw: Mapping[str, Any]) -> dict[str, FileEntry]:
    """The manifest's `files` value as a file table; KeyError, TypeError or ValueError if malformed."""
    return {str(name): FileEntry.from_json(entry) for name, entry in raw.items()}


def file_problem(path: Path, entry: FileEntry, name: str | Path | None = None) -> str:
    """Why the file at `path` does not match its table row ("" when it does); `name` labels it."""
    label = path if name is None else name
    if not path.is_file():
        return f"{label}: missing (listed in manifest.json)"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return (
            f"{label}: sha256 mismatch (manifest {entry.sha256[:12]}..., file {digest[:12]}...): "
            "tampered or corrupted"
        )
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{label}: size {size} bytes, manifest says {entry.bytes}"
    return ""

"""Resumable, hash-checked download of a bundle's files into the hub's `downloads/` directory."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autohas_edge.common.filetable import MANIFEST, FileEntry
from autohas_edge.common.fs import atomic_write_bytes, fsync_dir, sha256_file
from autohas_edge.device_sdk._validate import id_component
from autohas_edge.device_sdk.bundle import Manifest
from autohas_edge.device_sdk.errors import (
    BundleError,
    DownloadError,
    InvalidIdError,
    InvalidInputError,
)
from autohas_edge.device_sdk.runtime import available_runtimes, runnable_formats
from autohas_edge.device_sdk.signing import MAX_SIGNATURE_BYTES, SIGNATURE_FILE

if TYPE_CHECKING:
    from autohas_edge.device_sdk.hub import Hub

#: fetch(path, offset) -> the server's stream of FileChunk messages from `offset`
Fetch = Callable[[str, int], Iterator[Any]]
Progress = Callable[[str, int, int], None]
MIB = 1 << 20


@dataclass(frozen=True)
class DownloadLimits:
    """What a server may make a device store: a hostile or broken one cannot fill the disk.

    A bundle whose files declare more than `max_file_bytes` (one file) or `max_bundle_bytes` (all
    files to fetch) is refused before any byte is written; so is one that would leave less than
    `min_free_bytes` free (the download and the hub's copy of it both count). Partial downloads of
    other models untouched for `stale_seconds` are deleted when a download starts.
    """

    max_file_bytes: int = 256 * MIB
    max_bundle_bytes: int = 1024 * MIB
    min_free_bytes: int = 64 * MIB
    stale_seconds: float = 24 * 3600.0

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_bundle_bytes", "min_free_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"DownloadLimits.{name}: {value!r} is not a byte count")
        if not math.isfinite(self.stale_seconds) or self.stale_seconds < 0:
            raise InvalidInputError(f"DownloadLimits.stale_seconds: {self.stale_seconds!r}")

    def check(self, plan: Mapping[str, FileEntry]) -> None:
        """DownloadError unless every file and their sum are within the caps."""
        for rel, entry in plan.items():
            if entry.bytes > self.max_file_bytes:
                raise DownloadError(
                    f"{rel}: the server declares {entry.bytes} bytes, more than the "
                    f"{self.max_file_bytes} a file may have (DownloadLimits.max_file_bytes); refused"
                )
        total = sum(entry.bytes for entry in plan.values())
        if total > self.max_bundle_bytes:
            raise DownloadError(
                f"the bundle's files total {total} bytes, more than the {self.max_bundle_bytes} "
                "a bundle may have (DownloadLimits.max_bundle_bytes); refused"
            )


def download_bundle(
    hub: Hub,
    reply: Any,
    fetch: Fetch,
    formats: Iterable[str] | None,
    on_chunk: Progress | None,
    limits: DownloadLimits | None = None,
) -> tuple[Path, list[str]]:
    """Download what `formats` need of the bundle described by a `ModelManifest` reply."""
    limits = limits or DownloadLimits()
    try:
        manifest = Manifest.from_json(reply.manifest_json)
    except BundleError as exc:
        raise DownloadError(f"the server sent an unusable manifest: {exc}") from exc
    chosen = choose_formats(manifest, formats, hub.default_format)
    downloads = hub.root / "downloads"
    try:
        directory = downloads / id_component(reply.model.model_id, "model_id")
    except InvalidIdError as exc:
        raise DownloadError(f"the server sent an unusable model id: {exc}") from exc
    announced = {f.path: FileEntry(f.sha256, int(f.bytes)) for f in reply.files}
    _check_manifest(reply.manifest_json, announced)
    plan = _plan(manifest, chosen, announced)
    limits.check(plan)
    clean_stale(downloads, directory, set(plan), limits.stale_seconds)
    directory.mkdir(parents=True, exist_ok=True)
    _check_free_space(directory, plan, limits.min_free_bytes)
    for rel, expected in plan.items():
        download_file(directory / rel, rel, expected, fetch, on_chunk)
    atomic_write_bytes(directory / MANIFEST, reply.manifest_json.encode())
    return directory, chosen


def _plan(
    manifest: Manifest, formats: list[str], announced: Mapping[str, FileEntry]
) -> dict[str, FileEntry]:
    """The files to fetch with their sizes and hashes (the signature too, when the server has one)."""
    plan: dict[str, FileEntry] = {}
    for rel in manifest.required_files(formats):
        expected = manifest.files[rel]
        if announced.get(rel, expected) != expected:
            raise DownloadError(f"the server's file list and the manifest disagree about {rel}")
        plan[rel] = expected
    signature = announced.get(SIGNATURE_FILE)
    if signature is not None:  # whether one must be there is the hub's decision
        if signature.bytes > MAX_SIGNATURE_BYTES:
            raise DownloadError(
                f"{SIGNATURE_FILE}: the server declares {signature.bytes} bytes (at most "
                f"{MAX_SIGNATURE_BYTES}); refused"
            )
        plan[SIGNATURE_FILE] = signature
    return plan


def clean_stale(downloads: Path, current: Path, wanted: set[str], stale_seconds: float) -> None:
    """Delete what earlier downloads left that this one will not use.

    In `current`: every file (finished or `.part`) that is not one of `wanted`. Beside it: other
    models' download folders untouched for `stale_seconds` (another app may be fetching one now).
    """
    if current.is_dir():
        for path in current.rglob("*"):
            rel = path.relative_to(current).as_posix()
            if path.is_file() and rel.removesuffix(".part") not in wanted:
                path.unlink(missing_ok=True)
    if not downloads.is_dir():
        return
    now = time.time()
    for entry in downloads.iterdir():
        if entry == current or now - _last_change(entry) <= stale_seconds:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _last_change(path: Path) -> float:
    """The newest mtime of `path` and everything under it."""
    stamps = [path.stat().st_mtime]
    if path.is_dir():
        stamps += [p.stat().st_mtime for p in path.rglob("*")]
    return max(stamps)


def _check_free_space(directory: Path, plan: Mapping[str, FileEntry], keep_free: int) -> None:
    """DownloadError unless the rest of the download and the hub's copy of it fit, leaving `keep_free`."""
    have = 0
    for rel in plan:
        for path in (directory / rel, directory / f"{rel}.part"):
            if path.is_file():
                have += path.stat().st_size
    total = sum(entry.bytes for entry in plan.values())
    needed = max(0, total - have) + total  # the rest of the download, then the installed copy
    free = shutil.disk_usage(directory).free
    if free - needed < keep_free:
        raise DownloadError(
            f"not enough free space: the download needs {needed} bytes, {free} are free and "
            f"{keep_free} must stay free (DownloadLimits.min_free_bytes); nothing was fetched"
        )


def choose_formats(manifest: Manifest, formats: Iterable[str] | None, preferred: str) -> list[str]:
    """The formats to fetch: those asked for, else the hub's preferred one, else the first runnable."""
    if formats is not None:
        return list(dict.fromkeys(formats))
    runnable = runnable_formats(manifest.formats())
    if preferred in runnable:
        return [preferred]
    if not runnable:
        raise DownloadError(
            f"no format of this bundle ({manifest.formats()}) runs here ({available_runtimes()})"
        )
    return runnable[:1]


def _check_manifest(text: str, announced: dict[str, FileEntry]) -> None:
    if MANIFEST in announced:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest != announced[MANIFEST].sha256:
            raise DownloadError("manifest.json does not match the hash the server lists for it")


def download_file(
    final: Path, rel: str, expected: FileEntry, fetch: Fetch, on_chunk: Progress | None
) -> None:
    """Fetch one file into `final`, resuming a `.part` left by a broken earlier try."""
    sha, size = expected
    if final.is_file() and final.stat().st_size == size and sha256_file(final) == sha:
        return
    part = final.with_name(final.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        part.unlink()
        offset = 0
    with open(part, "ab") as f:
        for chunk in fetch(rel, offset):
            if chunk.offset != offset or (chunk.sha256 and chunk.sha256 != sha):
                raise DownloadError(
                    f"{rel}: chunk at offset {chunk.offset} (expected {offset}) or hash differs"
                )
            if offset + len(chunk.data) > size or chunk.total_bytes not in (0, size):
                part.unlink()  # never written past the declared size, and not resumed from
                raise DownloadError(
                    f"{rel}: the server sends more than the {size} bytes the manifest declares "
                    "(or announces another size); stopped and discarded"
                )
            f.write(chunk.data)
            offset += len(chunk.data)
            if on_chunk is not None:
                on_chunk(rel, offset, size)
        f.flush()
        os.fsync(f.fileno())
    _finish(part, final, rel, sha, size, offset)


def _finish(part: Path, final: Path, rel: str, sha: str, size: int, offset: int) -> None:
    if offset < size:
        raise DownloadError(
            f"{rel}: the download stopped at {offset} of {size} bytes; it resumes next time"
        )
    if offset > size or sha256_file(part) != sha:
        part.unlink()  # bad bytes cannot be resumed from: start this file again next time
        raise DownloadError(
            f"{rel}: downloaded bytes do not match the sha256 in the manifest; discarded"
        )
    os.replace(part, final)
    fsync_dir(final.parent)  # else a power cut may undo the rename of a file already checked

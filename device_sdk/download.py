"""Resumable, hash-checked download of a bundle's files into the hub's `downloads/` directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autohas_edge.common.filetable import MANIFEST, FileEntry
from autohas_edge.common.fs import atomic_write_bytes, fsync_dir, sha256_file
from autohas_edge.common.ids import id_to_component
from autohas_edge.device_sdk.bundle import Manifest
from autohas_edge.device_sdk.errors import BundleError, DownloadError
from autohas_edge.device_sdk.runtime import available_runtimes, runnable_formats
from autohas_edge.device_sdk.signing import MAX_SIGNATURE_BYTES, SIGNATURE_FILE

if TYPE_CHECKING:
    from autohas_edge.device_sdk.hub import Hub

#: fetch(path, offset) -> the server's stream of FileChunk messages from `offset`
Fetch = Callable[[str, int], Iterator[Any]]
Progress = Callable[[str, int, int], None]


def download_bundle(
    hub: Hub, reply: Any, fetch: Fetch, formats: Iterable[str] | None, on_chunk: Progress | None
) -> tuple[Path, list[str]]:
    """Download what `formats` need of the bundle described by a `ModelManifest` reply."""
    try:
        manifest = Manifest.from_json(reply.manifest_json)
    except BundleError as exc:
        raise DownloadError(f"the server sent an unusable manifest: {exc}") from exc
    chosen = choose_formats(manifest, formats, hub.default_format)
    directory = hub.root / "downloads" / id_to_component(reply.model.model_id, "model_id")
    directory.mkdir(parents=True, exist_ok=True)
    announced = {f.path: FileEntry(f.sha256, int(f.bytes)) for f in reply.files}
    _check_manifest(reply.manifest_json, announced)
    for rel in manifest.required_files(chosen):
        expected = manifest.files[rel]
        if announced.get(rel, expected) != expected:
            raise DownloadError(f"the server's file list and the manifest disagree about {rel}")
        download_file(directory / rel, rel, expected, fetch, on_chunk)
    _download_signature(directory, announced.get(SIGNATURE_FILE), fetch, on_chunk)
    atomic_write_bytes(directory / MANIFEST, reply.manifest_json.encode())
    return directory, chosen


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


def _download_signature(
    directory: Path, entry: FileEntry | None, fetch: Fetch, on_chunk: Progress | None
) -> None:
    """Fetch the bundle's `signature.json` when the server lists one (the hub decides if it must)."""
    path = directory / SIGNATURE_FILE
    if entry is None:
        path.unlink(missing_ok=True)  # one left by an earlier try must not pass for this bundle's
        return
    if entry.bytes > MAX_SIGNATURE_BYTES:
        raise DownloadError(
            f"{SIGNATURE_FILE}: the server declares {entry.bytes} bytes (at most "
            f"{MAX_SIGNATURE_BYTES}); refused"
        )
    download_file(path, SIGNATURE_FILE, entry, fetch, on_chunk)


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
            f.write(chunk.data)
            offset += len(chunk.data)
            if offset > size:
                break
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

"""Exported models: bundle directories under the data dir, exported in a worker process, served in chunks."""

from __future__ import annotations

import builtins
import json
import logging
import multiprocessing as mp
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autohas_edge.common.filetable import MANIFEST, files_table
from autohas_edge.common.fs import fsync_dir
from autohas_edge.common.proc import exit_when_gone
from autohas_edge.export.signing import sign_bundle
from autohas_edge.server.accounts import Principal
from autohas_edge.server.domain import EXPORT_FORMATS, JobState, ModelFile, ModelInfo, now
from autohas_edge.server.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from autohas_edge.server.jobs import JobManager, worker
from autohas_edge.server.store import Store
from autohas_edge.server.tokens import new_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)
MAX_EXPORT_JOBS = 64
#: Smaller requested chunks are raised to this: a 1-byte chunk size would make one download of a 16 MiB
#: model cost the server 16 million messages.
MIN_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class ExportOutcome:
    """One job's export: the new model, or why there is none."""

    job_id: str
    model: ModelInfo | None = None
    error: str = ""


def bundle_files(bundle: Path) -> tuple[ModelFile, ...]:
    """Every regular file under a bundle directory with its sha256 and size, by relative path."""
    table = files_table(bundle, with_manifest=True)  # devices check the manifest's hash too
    return tuple(ModelFile(path, entry.sha256, entry.bytes) for path, entry in table.items())


class ModelRegistry:
    """Records bundles, checks who may read them, and streams their files."""

    def __init__(
        self,
        store: Store,
        models_dir: Path,
        engine: str,
        chunk_bytes: int,
        *,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self._store, self._dir, self._engine, self._chunk_bytes = (
            store,
            Path(models_dir),
            engine,
            chunk_bytes,
        )
        self._signing_key = (
            signing_key  # every registered bundle is signed with it (signature.json)
        )
        self._staging = (
            self._dir / ".staging"
        )  # bundles being written; renamed into place when complete
        shutil.rmtree(
            self._staging, ignore_errors=True
        )  # half-written exports of a server that stopped
        self._staging.mkdir(parents=True)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def bundle_dir(self, model_id: str) -> Path:
        """Where a model's bundle lives."""
        return self._dir / model_id

    def import_bundle(self, task_id: str, job_id: str, bundle: Path) -> ModelInfo:
        """Copy an existing bundle directory in as a new model of a task (tools and tests)."""
        if self._store.get_task(task_id) is None:
            raise NotFound(f"task_id: no task {task_id!r}")
        model_id = new_id("model")
        tmp = self._staging / model_id
        shutil.copytree(bundle, tmp)
        return self._register(model_id, task_id, job_id, tmp)

    def _register(self, model_id: str, task_id: str, job_id: str, tmp: Path) -> ModelInfo:
        """Move a finished bundle into place (atomically, by rename), hash its files and record it."""
        if not (tmp / MANIFEST).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise FailedPrecondition(f"the bundle has no {MANIFEST}")
        manifest = json.loads((tmp / MANIFEST).read_text())
        formats = tuple(
            sorted({str(a.get("format", "")) for a in manifest.get("artifacts", [])} - {""})
        )
        if self._signing_key is not None:
            sign_bundle(tmp, self._signing_key)  # before the rename: a served bundle is signed
        dest = self.bundle_dir(model_id)
        os.replace(tmp, dest)
        fsync_dir(self._dir)  # the rename must be on disk before the store, fsynced, names it
        info = ModelInfo(model_id, task_id, job_id, formats, now())
        self._store.add_model(info, bundle_files(dest))
        return info

    def _readable(self, principal: Principal, task_id: str) -> None:
        # another app's task answers exactly as an unknown one: no oracle of which ids exist
        if not self._can_read(principal, task_id):
            raise NotFound(f"task_id: no task {task_id[:128]!r}")

    def _can_read(self, principal: Principal, task_id: str) -> bool:
        task = self._store.get_task(task_id)
        return task is not None and principal.can_read(task)

    def _model(
        self, principal: Principal, model_id: str
    ) -> tuple[ModelInfo, tuple[ModelFile, ...]]:
        found = self._store.get_model(model_id) if model_id else None
        if found is None or not self._can_read(principal, found[0].task_id):
            raise NotFound(f"model_id: no model {model_id[:128]!r}")
        return found

    def list(self, principal: Principal, task_id: str) -> list[ModelInfo]:
        """Models the caller may read, newest first; only one task's when `task_id` is set."""
        if task_id:
            self._readable(principal, task_id)
            return self._store.list_models(task_id)
        readable = {t.task_id for t in self._store.list_tasks() if principal.can_read(t)}
        return [m for m in self._store.list_models() if m.task_id in readable]

    def manifest(
        self, principal: Principal, model_id: str, task_id: str
    ) -> tuple[ModelInfo, str, tuple[ModelFile, ...]]:
        """A model (by id, or a task's newest) with its manifest.json text and its files."""
        if not model_id:
            if not task_id:
                raise InvalidArgument("model_id", "give model_id, or task_id for its newest model")
            self._readable(principal, task_id)
            models = self._store.list_models(task_id)
            if not models:
                raise NotFound(f"task_id: task {task_id!r} has no exported model yet")
            model_id = models[0].model_id
        info, files = self._model(principal, model_id)
        return info, (self.bundle_dir(model_id) / MANIFEST).read_text(), files

    def chunks(
        self, principal: Principal, model_id: str, path: str, offset: int, chunk_bytes: int
    ) -> Iterator[tuple[ModelFile, int, bytes]]:
        """Read one bundle file from `offset` in chunks of `chunk_bytes` (0 = the server's default; raised
        to `MIN_CHUNK_BYTES`, capped at the server's chunk size)."""
        _, files = self._model(principal, model_id)
        by_path = {f.path: f for f in files}
        if path not in by_path:
            raise NotFound(f"path: model {model_id!r} has no file {path[:256]!r}")
        file = by_path[path]
        if not 0 <= offset <= file.bytes:
            raise InvalidArgument("offset", f"{offset} is not in [0, {file.bytes}]")
        if chunk_bytes < 0:
            raise InvalidArgument("chunk_bytes", f"{chunk_bytes} is negative")
        size = min(
            max(chunk_bytes, MIN_CHUNK_BYTES) if chunk_bytes else self._chunk_bytes,
            self._chunk_bytes,
        )
        return self._read(file, self.bundle_dir(model_id) / file.path, offset, size)

    @staticmethod
    def _read(
        file: ModelFile, path: Path, offset: int, size: int
    ) -> Iterator[tuple[ModelFile, int, bytes]]:
        with open(path, "rb") as f:
            f.seek(offset)
            while True:  # an empty file, or a resume at its end, still gets one (empty) chunk
                data = f.read(size)
                if not data and offset < file.bytes:
                    raise DataLoss(
                        f"path: {file.path} of the bundle is shorter on disk than recorded"
                    )
                yield file, offset, data
                offset += len(data)
                if offset >= file.bytes:
                    return

    def export(
        self, jobs: JobManager, job_ids: builtins.list[str], formats: builtins.list[str]
    ) -> builtins.list[ExportOutcome]:
        """Export each finished job's model in the given formats (empty = the exporter's default)."""
        if not job_ids:
            raise InvalidArgument("job_ids", "at least one job id is required")
        if len(job_ids) > MAX_EXPORT_JOBS:
            raise InvalidArgument("job_ids", f"at most {MAX_EXPORT_JOBS} a call")
        for i, fmt in enumerate(formats):
            if fmt not in EXPORT_FORMATS:
                known = ", ".join(EXPORT_FORMATS)
                raise InvalidArgument(f"formats[{i}]", f"{fmt[:64]!r} is not one of {known}")
        found = [
            jobs.get(job_id) for job_id in job_ids
        ]  # every id must exist before any export starts
        outcomes = []
        for job in found:
            if job.state is not JobState.SUCCEEDED:
                outcomes.append(
                    ExportOutcome(job.job_id, error=f"job is {job.state.value}, not succeeded")
                )
                continue
            blocker = jobs.export_blocker(job.job_id)
            if blocker:
                outcomes.append(
                    ExportOutcome(job.job_id, error=f"job cannot be exported: {blocker}")
                )
                continue
            outcomes.append(
                self._export_one(job.job_id, job.spec.task_id, jobs.run_dir(job.job_id), formats)
            )
            if outcomes[-1].model is not None:
                jobs.attach_model(job.job_id, outcomes[-1].model.model_id)
        return outcomes

    def _export_one(
        self, job_id: str, task_id: str, run_dir: Path, formats: builtins.list[str]
    ) -> ExportOutcome:
        model_id = new_id("model")
        tmp = self._staging / model_id
        try:
            self._pool().submit(
                worker.export_model, self._engine, str(run_dir), str(tmp), formats
            ).result()
            return ExportOutcome(job_id, model=self._register(model_id, task_id, job_id, tmp))
        except Exception as e:
            if isinstance(e, BrokenProcessPool):
                with self._lock:
                    self._executor = None
            log.warning("export of job %s failed: %s", job_id, e)
            shutil.rmtree(tmp, ignore_errors=True)
            return ExportOutcome(job_id, error=f"{type(e).__name__}: {e}")

    def _pool(self) -> ProcessPoolExecutor:
        """The export worker process (started on first use; torch never loads into the server process)."""
        with self._lock:
            if self._executor is None:
                # the worker exits when this process is gone (a killed server leaves none behind)
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=mp.get_context("spawn"),
                    initializer=exit_when_gone,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def close(self) -> None:
        """Stop the export worker."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None

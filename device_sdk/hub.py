"""The hub: the device's one model store, shared by all apps (a directory on the device)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from autohas_edge.device_sdk._fs import atomic_write_json, fsync_dir, read_json, safe_component
from autohas_edge.device_sdk.bundle import MANIFEST, Manifest
from autohas_edge.device_sdk.errors import BundleError, ModelNotFoundError
from autohas_edge.device_sdk.model import Engine, Model
from autohas_edge.device_sdk.verify import verify_bundle

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: one process per hub is assumed
    fcntl = None  # type: ignore[assignment]

SHARED = "shared"
VERIFIED = ".verified.json"


class Hub:
    """Owns the models under `root`; apps get a task's model with `hub.model(task_id, app_id=...)`.

    Layout: `bundles/<model_id>__<formats>__<manifest hash>/` holds verified, never-modified bundles;
    `tasks/<task>/` holds pointers to them (`shared.json`, `apps/<app_id>.json`); `heads/` holds the
    personalised heads.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, format: str = "auto", threads: int | None = None
    ) -> None:
        self.root = Path(root)
        self.default_format = format
        self.threads = threads
        for sub in ("bundles", "tasks", "heads", "staging"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._engines: dict[tuple[str, str], Engine] = {}
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._clean_staging()

    # -- installing -------------------------------------------------------------------------------

    def install(
        self,
        bundle_dir: str | os.PathLike[str],
        task_id: str | None = None,
        *,
        app_id: str | None = None,
        formats: Iterable[str] | None = None,
        model_id: str | None = None,
    ) -> str:
        """Verify a bundle and make it the task's model (the app's own one if `app_id`); returns its id.

        The bundle is copied, the copy verified (hashes + reference outputs), then switched in by
        renames: a failure at any point leaves the previously installed model in use.
        """
        source = Path(bundle_dir)
        manifest = Manifest.load(source)
        task = safe_component(
            task_id or manifest.raw.get("task_id") or _missing_task(source), "task_id"
        )
        model = safe_component(model_id or _model_id(source, manifest), "model_id")
        wanted = None if formats is None else list(dict.fromkeys(formats))
        with self._exclusive():
            name = self._ensure_bundle(source, manifest, model, wanted)
            self._point(
                task, app_id, {"bundle": name, "model_id": model, "installed_at": time.time()}
            )
        return model

    def _ensure_bundle(
        self, source: Path, manifest: Manifest, model: str, formats: list[str] | None
    ) -> str:
        staging = self.root / "staging" / f"{model}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True)
            for rel in [MANIFEST, *manifest.required_files(formats)]:
                _copy_durably(source / rel, staging / rel)
            report = verify_bundle(staging, formats, self.threads)
            digest = hashlib.sha256((staging / MANIFEST).read_bytes()).hexdigest()[:12]
            name = f"{model}__{'+'.join(report.formats)}__{digest}"  # same name = same verified content
            target = self.root / "bundles" / name
            if target.exists():
                return name
            atomic_write_json(
                staging / VERIFIED, {"formats": list(report.formats), "errors": report.formats}
            )
            fsync_dir(staging)
            os.rename(staging, target)
            fsync_dir(target.parent)
            return name
        except FileNotFoundError as exc:
            raise BundleError(f"bundle file missing: {exc.filename}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _point(self, task: str, app_id: str | None, pointer: dict[str, object]) -> None:
        atomic_write_json(
            self._pointer_path(task, app_id and safe_component(app_id, "app_id")), pointer
        )

    # -- using ------------------------------------------------------------------------------------

    def model(
        self, task_id: str, *, app_id: str, private: bool = False, format: str | None = None
    ) -> Model:
        """A handle to the task's model for one app: the app's own if it has one, else the shared one.

        `private=True` gives the app its own copy (starting from the shared model) so that its
        fine-tuning does not change what other apps see.
        """
        task, app = safe_component(task_id, "task_id"), safe_component(app_id, "app_id")
        owner = app if private or self._pointer_path(task, app).exists() else None
        if private and not self._pointer_path(task, app).exists():
            with self._exclusive():
                self._point(task, app, self._read_pointer(task, None))
        self._read_pointer(task, owner)  # fail now, not at first predict
        return Model(self, task, app, owner, format or self.default_format)

    def tasks(self) -> list[str]:
        """Tasks with an installed shared or app-specific model."""
        return sorted(p.name for p in (self.root / "tasks").iterdir() if p.is_dir())

    def installed(self, task_id: str, app_id: str | None = None) -> str | None:
        """The model id installed for a task (an app's own when `app_id` has one), or None."""
        owner = app_id if app_id and self._pointer_path(task_id, app_id).exists() else None
        pointer = read_json(self._pointer_path(task_id, owner))
        return None if pointer is None else str(pointer["model_id"])

    def installed_formats(self, task_id: str, app_id: str | None = None) -> list[str]:
        """The verified formats of the model installed for a task (an app's own when it has one)."""
        owner = app_id if app_id and self._pointer_path(task_id, app_id).exists() else None
        pointer = read_json(self._pointer_path(task_id, owner))
        if pointer is None:
            return []
        return list(
            read_json(self.root / "bundles" / str(pointer["bundle"]) / VERIFIED, {"formats": []})[
                "formats"
            ]
        )

    def share(self, task_id: str, app_id: str) -> None:
        """Drop an app's own model of a task so that it uses the shared one again."""
        with self._exclusive():
            self._pointer_path(task_id, safe_component(app_id, "app_id")).unlink(missing_ok=True)

    def prune(self) -> list[str]:
        """Delete installed bundles no task or app points at any more; returns their names."""
        with self._exclusive():
            used = {str(read_json(p)["bundle"]) for p in (self.root / "tasks").rglob("*.json")}
            unused = [p for p in (self.root / "bundles").iterdir() if p.name not in used]
            for path in unused:
                shutil.rmtree(path, ignore_errors=True)
            with self._lock:
                self._engines = {k: v for k, v in self._engines.items() if k[0] in used}
        return sorted(p.name for p in unused)

    # -- internals used by Model and ServerClient ---------------------------------------------------

    def _pointer_path(self, task: str, owner: str | None) -> Path:
        base = self.root / "tasks" / task
        return base / f"{SHARED}.json" if owner is None else base / "apps" / f"{owner}.json"

    def _read_pointer(self, task: str, owner: str | None) -> dict[str, object]:
        pointer = read_json(self._pointer_path(task, owner))
        if pointer is None:
            whose = "shared" if owner is None else f"app {owner!r}'s"
            raise ModelNotFoundError(
                f"no {whose} model installed for task {task!r} under {self.root}"
            )
        return dict(pointer)

    def _heads_dir(self, task: str, owner: str | None, model_id: str) -> Path:
        who = SHARED if owner is None else f"app.{owner}"
        return self.root / "heads" / task / who / model_id

    def _engine(self, bundle: str, fmt: str) -> Engine:
        with self._lock:
            key = (bundle, fmt)
            if key not in self._engines:
                directory = self.root / "bundles" / bundle
                verified = read_json(directory / VERIFIED, {"formats": []})["formats"]
                self._engines[key] = Engine(directory, fmt, verified, self.threads)
            return self._engines[key]

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise writers across threads and processes sharing this root (re-entrant per thread)."""
        with self._lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            with open(self.root / ".lock", "a") as handle:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0

    def _clean_staging(self) -> None:
        """Remove what an install killed mid-way left behind (its process is gone)."""
        for entry in (self.root / "staging").iterdir():
            pid = entry.name.split(".")[-2] if entry.name.count(".") >= 2 else ""
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _copy_durably(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def _model_id(source: Path, manifest: Manifest) -> str:
    explicit = manifest.raw.get("model_id")
    if explicit:
        return str(explicit)
    return "sha256-" + hashlib.sha256((source / MANIFEST).read_bytes()).hexdigest()[:16]


def _missing_task(source: Path) -> str:
    raise BundleError(f"{source} names no task_id in its manifest: pass task_id= to install()")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

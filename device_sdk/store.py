"""The hub's directory, shared by `Hub` (which installs) and `Model` (which reads and personalises).

Layout under `root`: `bundles/<name>/` verified, never-modified bundles; `tasks/<task>/shared.json`
and `tasks/<task>/apps/<app>.json` pointers to them; `heads/<task>/<owner>/<model>/` personalised
heads. Every id becomes one directory or file name through `id_to_component`, so any id the server
accepts (`team/gestures`, `gestures:v2`) has its own place and none can leave `root`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autohas_edge.common.fs import atomic_write_json, file_stamp, read_json
from autohas_edge.common.ids import component_to_id, id_to_component, is_id
from autohas_edge.device_sdk._validate import id_component
from autohas_edge.device_sdk.engine import Engine
from autohas_edge.device_sdk.errors import ModelNotFoundError

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: one process per hub is assumed
    fcntl = None  # type: ignore[assignment]

SHARED = "shared"
VERIFIED = ".verified.json"
SUBDIRS = ("bundles", "tasks", "heads", "staging")


class ModelStore:
    """Pointers, bundles and heads under `root`, the writers' lock, and the loaded engines."""

    def __init__(self, root: Path, threads: int | None) -> None:
        self.root = Path(root)
        self.threads = threads
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._engines: dict[tuple[str, str], Engine] = {}
        self._lock = threading.RLock()
        self._lock_depth = 0

    # -- pointers: which bundle a task's shared model, or an app's own one, is ------------------------

    def pointer_path(self, task_id: str, app_id: str | None) -> Path:
        """Where the pointer of a task's shared model (`app_id` None) or of an app's own one lives."""
        base = self.root / "tasks" / id_component(task_id, "task_id")
        if app_id is None:
            return base / f"{SHARED}.json"
        return base / "apps" / f"{id_component(app_id, 'app_id')}.json"

    def has_own(self, task_id: str, app_id: str) -> bool:
        """True when the app has its own model of the task."""
        return self.pointer_path(task_id, app_id).exists()

    def find_pointer(self, task_id: str, app_id: str | None) -> dict[str, Any] | None:
        """The pointer, or None when nothing is installed there."""
        pointer = read_json(self.pointer_path(task_id, app_id))
        return None if pointer is None else dict(pointer)

    def read_pointer(self, task_id: str, app_id: str | None) -> dict[str, Any]:
        """The pointer; ModelNotFoundError when nothing is installed there."""
        pointer = self.find_pointer(task_id, app_id)
        if pointer is None:
            whose = "shared" if app_id is None else f"app {app_id!r}'s"
            raise ModelNotFoundError(
                f"no {whose} model installed for task {task_id!r} under {self.root}"
            )
        return pointer

    def write_pointer(self, task_id: str, app_id: str | None, pointer: dict[str, Any]) -> None:
        """Switch the pointer atomically (call inside `exclusive`)."""
        # the task id is kept too: a very long id's directory name cannot be decoded back
        atomic_write_json(
            self.pointer_path(task_id, app_id), {**pointer, "task_id": task_id}, sort_keys=True
        )

    def drop_pointer(self, task_id: str, app_id: str) -> None:
        """Remove an app's own pointer (call inside `exclusive`)."""
        self.pointer_path(task_id, app_id).unlink(missing_ok=True)

    def pointer_stamp(self, task_id: str, app_id: str | None) -> tuple[int, int]:
        """Changes whenever the pointer is switched, by this process or another."""
        return file_stamp(self.pointer_path(task_id, app_id))

    def task_ids(self) -> list[str]:
        """Tasks with a shared or app-specific pointer directory."""
        found = [p for p in (self.root / "tasks").iterdir() if p.is_dir()]
        return sorted(tid for p in found if (tid := _task_id(p)) is not None)

    def used_bundles(self) -> set[str]:
        """Names of the bundles some pointer names."""
        return {str(read_json(p)["bundle"]) for p in (self.root / "tasks").rglob("*.json")}

    # -- bundles, heads and engines -------------------------------------------------------------------

    def bundle_dir(self, name: str) -> Path:
        """The directory of an installed bundle."""
        return self.root / "bundles" / name

    def verified_formats(self, name: str) -> list[str]:
        """The formats an installed bundle was verified in."""
        return list(read_json(self.bundle_dir(name) / VERIFIED, {"formats": []})["formats"])

    def heads_dir(self, task_id: str, app_id: str | None, model_id: str) -> Path:
        """Where the personalised heads of one model for a task (shared, or an app's own) live."""
        who = SHARED if app_id is None else f"app.{id_component(app_id, 'app_id')}"
        task = id_component(task_id, "task_id")
        return self.root / "heads" / task / who / id_component(model_id, "model_id")

    def engine(self, bundle: str, fmt: str) -> Engine:
        """The bundle loaded in `fmt`, loaded once per store."""
        with self._lock:
            key = (bundle, fmt)
            if key not in self._engines:
                verified = self.verified_formats(bundle)
                self._engines[key] = Engine(self.bundle_dir(bundle), fmt, verified, self.threads)
            return self._engines[key]

    def forget_engines(self, keep: set[str]) -> None:
        """Unload the engines of bundles not in `keep` (they were pruned)."""
        with self._lock:
            self._engines = {k: v for k, v in self._engines.items() if k[0] in keep}

    # -- the writers' lock ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
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


def _task_id(directory: Path) -> str | None:
    """The task id of a `tasks/` directory: its decoded name, else what its pointers record."""
    decoded = component_to_id(directory.name)
    if decoded is not None:
        return decoded
    for pointer in sorted(directory.rglob("*.json")):
        recorded = (read_json(pointer) or {}).get("task_id")
        if is_id(recorded) and id_to_component(recorded) == directory.name:
            return recorded
    return None

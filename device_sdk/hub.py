"""The hub: the device's one model store, shared by all apps (a directory on the device)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from autohas_edge.common.filetable import MANIFEST
from autohas_edge.common.fs import atomic_write_json, fsync_dir, sha256_file
from autohas_edge.common.proc import is_alive
from autohas_edge.device_sdk._validate import as_id, id_component
from autohas_edge.device_sdk.bundle import Manifest
from autohas_edge.device_sdk.errors import BundleError
from autohas_edge.device_sdk.model import Model
from autohas_edge.device_sdk.signing import SIGNATURE_FILE, TrustPolicy
from autohas_edge.device_sdk.store import VERIFIED, ModelStore
from autohas_edge.device_sdk.verify import verify_bundle


class Hub:
    """Owns the models under `root`; apps get a task's model with `hub.model(task_id, app_id=...)`.

    Layout: `bundles/<model_id>__<formats>__<manifest hash>/` holds verified, never-modified bundles;
    `tasks/<task>/` holds pointers to them (`shared.json`, `apps/<app_id>.json`); `heads/` holds the
    personalised heads (see `store.ModelStore`).

    Only bundles signed by one of `trusted_keys` (Ed25519 public keys in PEM, as `autohas keygen`
    writes them) are installed; `allow_unsigned=True` opts out and also takes unsigned bundles
    (a signed one is still checked when keys are given).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        format: str = "auto",
        threads: int | None = None,
        trusted_keys: Iterable[str | bytes] = (),
        allow_unsigned: bool = False,
    ) -> None:
        self.root = Path(root)
        self.default_format = format
        self.threads = threads
        self.trust = TrustPolicy.of(trusted_keys, allow_unsigned)
        self._store = ModelStore(self.root, threads)
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

        The bundle is copied, the copy verified (signature, hashes, reference outputs), then switched
        in by renames: a failure at any point leaves the previously installed model in use.
        """
        source = Path(bundle_dir)
        manifest = Manifest.load(source)
        task = as_id(task_id or manifest.raw.get("task_id") or _missing_task(source), "task_id")
        model = as_id(model_id or _model_id(source, manifest), "model_id")
        owner = as_id(app_id, "app_id") if app_id else None  # "" and None: the shared model
        wanted = None if formats is None else list(dict.fromkeys(formats))
        with self._store.exclusive():
            name = self._ensure_bundle(source, manifest, model, wanted)
            self._store.write_pointer(
                task, owner, {"bundle": name, "model_id": model, "installed_at": time.time()}
            )
        return model

    def _ensure_bundle(
        self, source: Path, manifest: Manifest, model: str, formats: list[str] | None
    ) -> str:
        prefix = id_component(model, "model_id")
        staging = self.root / "staging" / f"{prefix}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True)
            signed = [SIGNATURE_FILE] if (source / SIGNATURE_FILE).is_file() else []
            for rel in [MANIFEST, *signed, *manifest.required_files(formats)]:
                _copy_durably(source / rel, staging / rel)
            self.trust.check(staging)  # the copy, not the source: it cannot change after the check
            report = verify_bundle(staging, formats, self.threads)
            digest = sha256_file(staging / MANIFEST)[:12]
            name = f"{prefix}__{'+'.join(report.formats)}__{digest}"  # same name = same content
            target = self._store.bundle_dir(name)
            if target.exists():
                return name
            atomic_write_json(
                staging / VERIFIED,
                {"formats": list(report.formats), "errors": report.formats},
                sort_keys=True,
            )
            fsync_dir(staging)
            os.rename(staging, target)
            fsync_dir(target.parent)
            return name
        except FileNotFoundError as exc:
            raise BundleError(f"bundle file missing: {exc.filename}") from exc
        except OSError as exc:  # a listed "file" that is a directory, an unreadable one, ...
            raise BundleError(f"cannot copy the bundle's {exc.filename}: {exc.strerror}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- using ------------------------------------------------------------------------------------

    def model(
        self, task_id: str, *, app_id: str, private: bool = False, format: str | None = None
    ) -> Model:
        """A handle to the task's model for one app: the app's own if it has one, else the shared one.

        `private=True` gives the app its own copy (starting from the shared model) so that its
        fine-tuning does not change what other apps see.
        """
        task, app = as_id(task_id, "task_id"), as_id(app_id, "app_id")
        own = self._store.has_own(task, app)
        if private and not own:
            with self._store.exclusive():
                self._store.write_pointer(task, app, self._store.read_pointer(task, None))
        owner = app if private or own else None
        self._store.read_pointer(task, owner)  # fail now, not at first predict
        return Model(self._store, task, app, owner, format or self.default_format)

    def tasks(self) -> list[str]:
        """Tasks with an installed shared or app-specific model."""
        return self._store.task_ids()

    def installed(self, task_id: str, app_id: str | None = None) -> str | None:
        """The model id installed for a task (an app's own when `app_id` has one), or None."""
        pointer = self._store.find_pointer(task_id, self._owner(task_id, app_id))
        return None if pointer is None else str(pointer["model_id"])

    def installed_formats(self, task_id: str, app_id: str | None = None) -> list[str]:
        """The verified formats of the model installed for a task (an app's own when it has one)."""
        pointer = self._store.find_pointer(task_id, self._owner(task_id, app_id))
        return [] if pointer is None else self._store.verified_formats(str(pointer["bundle"]))

    def share(self, task_id: str, app_id: str) -> None:
        """Drop an app's own model of a task so that it uses the shared one again."""
        with self._store.exclusive():
            self._store.drop_pointer(task_id, app_id)

    def prune(self) -> list[str]:
        """Delete installed bundles no task or app points at any more; returns their names."""
        with self._store.exclusive():
            used = self._store.used_bundles()
            unused = [p for p in (self.root / "bundles").iterdir() if p.name not in used]
            for path in unused:
                shutil.rmtree(path, ignore_errors=True)
            self._store.forget_engines(used)
        return sorted(p.name for p in unused)

    def _owner(self, task_id: str, app_id: str | None) -> str | None:
        """`app_id` when that app has its own model of the task, else None (the shared one)."""
        return app_id if app_id and self._store.has_own(task_id, app_id) else None

    def _clean_staging(self) -> None:
        """Remove what an install killed mid-way left behind (its process is gone)."""
        for entry in (self.root / "staging").iterdir():
            pid = entry.name.split(".")[-2] if entry.name.count(".") >= 2 else ""
            if pid.isdigit() and not is_alive(int(pid)):
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
    return "sha256-" + sha256_file(source / MANIFEST)[:16]


def _missing_task(source: Path) -> str:
    raise BundleError(f"{source} names no task_id in its manifest: pass task_id= to install()")

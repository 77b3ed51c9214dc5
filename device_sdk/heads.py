"""Personalised heads on disk: every accepted fine-tune is a new version; a pointer file picks one."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.common.fs import atomic_write_json, atomic_write_npz, file_stamp, read_json
from autohas_edge.device_sdk.errors import BundleError
from autohas_edge.device_sdk.finetune import Head, InputAlignment

_VERSION_FILE = re.compile(r"^v(\d{6})\.npz$")
CURRENT = "CURRENT.json"


@dataclass(frozen=True)
class UserClasses:
    """What a head grown on the device carries besides its weights (`Model.add_class`)."""

    labels: tuple[str, ...]  # every class's name, index = class id (the bundle's first)
    x: np.ndarray  # [m, *input_shape] float32: the examples the added classes were made from
    y: np.ndarray  # [m] int64: their class ids


class HeadStore:
    """Versioned heads of one (task, owner, model); version 0 is the bundle's own head."""

    def __init__(self, directory: Path, base: Head) -> None:
        self.directory = Path(directory)
        self.base = base

    def current_version(self) -> int:
        """The version in use (0 = the bundle's head)."""
        return int(read_json(self.directory / CURRENT, {"version": 0})["version"])

    def stamp(self) -> tuple[int, int]:
        """A value that changes whenever another handle or process switches version."""
        return file_stamp(self.directory / CURRENT)  # every switch is a rename: a new inode

    def versions(self) -> list[int]:
        """All stored versions, oldest first, including 0."""
        found = [int(m.group(1)) for p in _listdir(self.directory) if (m := _VERSION_FILE.match(p))]
        return [0, *sorted(found)]

    def load(self, version: int | None = None) -> Head:
        """The head of `version` (the current one when None)."""
        version = self.current_version() if version is None else version
        if version == 0:
            return self.base.copy()
        with np.load(self._path(version), allow_pickle=False) as data:
            alignment = None
            if "align_scale" in data.files:  # fine-tuned with trainable "input+head"
                alignment = InputAlignment(data["align_scale"], data["align_shift"])
            weight, bias = data["weight"].astype(np.float32), data["bias"].astype(np.float32)
            return Head(weight, bias, alignment)

    def metadata(self, version: int) -> dict[str, Any]:
        """What was recorded when `version` was saved (empty for version 0)."""
        if version == 0:
            return {}
        with np.load(self._path(version), allow_pickle=False) as data:
            return dict(json.loads(str(data["meta"])))

    def classes(self, version: int | None = None) -> UserClasses | None:
        """The class names and added classes' examples of `version`; None for a bundle-sized head."""
        version = self.current_version() if version is None else version
        if version == 0:
            return None
        with np.load(self._path(version), allow_pickle=False) as data:
            if "labels" not in data.files:
                return None  # saved by a fine-tune of a head with the bundle's classes
            labels = tuple(str(name) for name in data["labels"].tolist())
            classes = UserClasses(labels, data["class_x"].astype(np.float32), data["class_y"])
            rows = data["weight"].shape[0]
        if len(labels) != rows:
            raise BundleError(f"{self._path(version)}: {len(labels)} class names for {rows} rows")
        return classes

    def save(self, head: Head, meta: dict[str, Any], classes: UserClasses | None = None) -> int:
        """Store `head` (with its `classes` when grown) as a new version and make it current.

        Crash-safe at every step.
        """
        version = max(self.versions()) + 1
        # The version file is durable before the pointer names it: a crash leaves the old pointer.
        arrays = {
            "weight": head.weight,
            "bias": head.bias,
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        }
        if head.alignment is not None:
            arrays["align_scale"] = head.alignment.scale
            arrays["align_shift"] = head.alignment.shift
        if classes is not None:
            arrays["labels"] = np.array(classes.labels, dtype=np.str_)
            arrays["class_x"] = np.asarray(classes.x, dtype=np.float32)
            arrays["class_y"] = np.asarray(classes.y, dtype=np.int64)
        atomic_write_npz(self._path(version), arrays)
        self.activate(version)
        return version

    def activate(self, version: int) -> None:
        """Point at an existing version (0 resets to the bundle's head)."""
        if version not in self.versions():
            raise ValueError(f"no personalised version {version}; have {self.versions()}")
        atomic_write_json(self.directory / CURRENT, {"version": version}, sort_keys=True)

    def _path(self, version: int) -> Path:
        return self.directory / f"v{version:06d}.npz"


def _listdir(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []

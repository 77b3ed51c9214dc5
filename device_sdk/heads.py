"""Personalised heads on disk: every accepted fine-tune is a new version; a pointer file picks one."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.common.fs import atomic_write_json, atomic_write_npz, file_stamp, read_json
from autohas_edge.device_sdk.finetune import Head

_VERSION_FILE = re.compile(r"^v(\d{6})\.npz$")
CURRENT = "CURRENT.json"


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
            return Head(data["weight"].astype(np.float32), data["bias"].astype(np.float32))

    def metadata(self, version: int) -> dict[str, Any]:
        """What was recorded when `version` was saved (empty for version 0)."""
        if version == 0:
            return {}
        with np.load(self._path(version), allow_pickle=False) as data:
            return dict(json.loads(str(data["meta"])))

    def save(self, head: Head, meta: dict[str, Any]) -> int:
        """Store `head` as a new version and make it current; crash-safe at every step."""
        version = max(self.versions()) + 1
        # The version file is durable before the pointer names it: a crash leaves the old pointer.
        arrays = {
            "weight": head.weight,
            "bias": head.bias,
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        }
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

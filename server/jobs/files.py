"""The job directories' JSON files: atomic, durable and private (people's data lives beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autohas_edge.common.fs import atomic_write_json


def write_json_atomic(path: Path, value: Any) -> None:
    """Atomically write a private JSON document in the job directories' format (indent 1)."""
    atomic_write_json(path, value, indent=1)

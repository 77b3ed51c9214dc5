"""The bundle manifest (docs/architecture.md §5): reading and writing; no torch.

Its file table (`files`: every file's sha256 and size) is `autohas_edge.common.filetable`.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from autohas_edge.common.filetable import MANIFEST
from autohas_edge.export.errors import ExportError

SCHEMA_VERSION = 1
HEAD_FILE = "head.npz"
REFERENCE_FILE = "reference.npz"
#: the head's train-step graph of each runtime (`fine_tuning.train_step` holds its contract)
TRAIN_STEP_FILES = {"onnx": "train_step.onnx", "tflite": "train_step.tflite"}
#: the distributions whose versions a manifest records (those not installed are left out)
TOOLS = (
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "numpy",
)


def tool_versions() -> dict[str, str]:
    """Versions of Python and of the installed export / runtime packages."""
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.json` (pretty, key order kept) into `bundle`."""
    path = bundle / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    return path


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    """Load and sanity-check `bundle/manifest.json`; a missing or malformed one raises ExportError."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ExportError(bundle, "bundle directory not found")
    path = bundle / MANIFEST
    if not path.is_file():
        raise ExportError(path, "manifest not found")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(path, f"not valid JSON ({err})") from err
    if not isinstance(manifest, dict):  # a list or a string would fail below with a TypeError
        raise ExportError(path, f"not a JSON object (a {type(manifest).__name__})")
    missing = [k for k in ("schema_version", "artifacts", "files") if k not in manifest]
    if missing:
        raise ExportError(path, f"missing key {missing[0]!r}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        found = manifest["schema_version"]
        raise ExportError(
            path, f"schema_version {found} is not {SCHEMA_VERSION}, the one this tool reads"
        )
    return manifest


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays, Paths -> JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

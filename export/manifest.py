"""The bundle manifest (docs/architecture.md §5): hashes, file entries, reading and writing; no torch."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from autohas_edge.export.errors import ExportError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
HEAD_FILE = "head.npz"
REFERENCE_FILE = "reference.npz"
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


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    """`{sha256, bytes}` of a file."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def files_table(bundle: Path) -> dict[str, dict[str, Any]]:
    """Every file of the bundle except the manifest itself -> its sha256 and size."""
    return {
        p.name: file_entry(p)
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


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

"""Torch model -> verified ONNX / TFLite bundles (docs/architecture.md §5).

`verify_bundle` and everything it uses import no torch, so a device (or `autohas verify`) can re-check a
bundle with onnxruntime or a TFLite interpreter alone; `export_run` and `export_model` import torch
lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from autohas_edge.export.errors import ExportError, VerificationError
from autohas_edge.export.formats import ALL_FORMATS, FORMATS, parse_formats
from autohas_edge.export.verify import VerificationReport, verify_bundle

#: torch-side API, imported on first access
_LAZY = {
    "export_run": "autohas_edge.export.run",
    "export_model": "autohas_edge.export.bundle",
    "ExportReport": "autohas_edge.export.bundle",
}

__all__ = [
    "ALL_FORMATS",
    "FORMATS",
    "ExportError",
    "ExportReport",
    "VerificationError",
    "VerificationReport",
    "export_model",
    "export_run",
    "parse_formats",
    "verify_bundle",
]


def __getattr__(name: str) -> Any:
    """Import the torch-side API only when it is used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")

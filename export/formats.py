"""The export formats, the runtimes that run them and the bundle file each one writes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autohas_edge.export.errors import ExportError

ROLES = ("model", "features")
#: the output name of each role, the same in every format
OUTPUT_NAMES = {"model": "logits", "features": "features"}
INPUT_NAME = "x"


@dataclass(frozen=True)
class Format:
    """One export format: its name, the runtime that runs it and whether it is int8."""

    name: str
    runtime: str  # "onnx" | "tflite"
    int8: bool

    @property
    def float_name(self) -> str:
        """The float format this one is quantized from (itself when float)."""
        return self.runtime

    def file(self, role: str) -> str:
        """The bundle file name of `role` ("model" or "features") in this format."""
        suffix = "onnx" if self.runtime == "onnx" else "tflite"
        return f"{role}{'_int8' if self.int8 else ''}.{suffix}"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", "onnx", False),
        Format("tflite", "tflite", False),
        Format("onnx-int8", "onnx", True),
        Format("tflite-int8", "tflite", True),
    )
}


def parse_formats(spec: str | Iterable[str | Format]) -> tuple[Format, ...]:
    """Formats from "onnx,tflite-int8" (or a list of names / Formats), in canonical order; unknown raise."""
    items = spec.split(",") if isinstance(spec, str) else [getattr(f, "name", f) for f in spec]
    names = [str(n).strip() for n in items if str(n).strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportError(
            "--formats", f"unknown format {unknown[0]!r} (choose from {', '.join(FORMATS)})"
        )
    if not names:
        raise ExportError("--formats", f"no format given (choose from {', '.join(FORMATS)})")
    return tuple(f for n, f in FORMATS.items() if n in names)


#: every format, the default of `autohas export`
ALL_FORMATS = ",".join(FORMATS)

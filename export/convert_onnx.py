"""torch -> ONNX (dynamo exporter, dynamic batch, one self-contained file) and int8 QDQ quantization."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from autohas_edge.export.errors import ExportError
from autohas_edge.export.formats import INPUT_NAME
from autohas_edge.export.quiet import quiet

#: the largest batch the exported graph accepts (torch.export needs a bound)
MAX_BATCH = 1 << 16


def export_onnx(
    module: torch.nn.Module, sample: torch.Tensor, path: Path, output_name: str
) -> None:
    """Export `module` to `path` with a dynamic batch dimension, weights inside the one file."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Export into a scratch folder so a stray sidecar (`.data`) can never end up in the bundle.
    with tempfile.TemporaryDirectory() as scratch, quiet():
        target = Path(scratch) / path.name
        torch.onnx.export(
            module,
            (sample,),
            str(target),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        extra = sorted(p.name for p in Path(scratch).iterdir() if p.name != path.name)
        if extra:
            raise ExportError(
                path, f"ONNX exporter wrote extra files {extra}, expected one self-contained file"
            )
        shutil.move(str(target), path)


class _Reader(CalibrationDataReader):
    """onnxruntime calibration reader over an array of inputs, `batch` rows at a time."""

    def __init__(self, x: np.ndarray, batch: int = 64) -> None:
        self._batches = iter([{INPUT_NAME: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(float_path: Path, path: Path, calibration_x: np.ndarray) -> None:
    """Static int8 QDQ quantization (per-channel weights) calibrated on `calibration_x`."""
    reader = _Reader(calibration_x.astype(np.float32))
    with tempfile.TemporaryDirectory() as scratch, quiet():
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(
            str(prepared),
            str(path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )

"""torch -> TFLite with litert-torch (no TensorFlow) and int8 static quantization with ai-edge-quantizer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autohas_edge.export.errors import one_line
from autohas_edge.export.formats import INPUT_NAME
from autohas_edge.export.quiet import quiet
from autohas_edge.export.runtimes import tflite_interpreter_class

#: the largest batch a dynamic-batch TFLite graph would accept
MAX_BATCH = 1 << 16


@dataclass(frozen=True)
class TFLiteExport:
    """How a TFLite artifact came out: its batch ("dynamic" or 1) and why, when fixed."""

    batch: int | str
    note: str = ""


class _Named(torch.nn.Module):
    """Return `{output_name: module(x)}` so the TFLite signature names its output like the ONNX one."""

    def __init__(self, module: torch.nn.Module, output_name: str) -> None:
        super().__init__()
        self.module, self.output_name = module, output_name

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.output_name: self.module(x)}


def export_tflite(
    module: torch.nn.Module,
    sample: torch.Tensor,
    path: Path,
    output_name: str,
    fixed_reason: str = "",
) -> TFLiteExport:
    """Convert `module` to `path`: a dynamic batch when litert-torch can lower it, else batch 1.

    A non-empty `fixed_reason` skips the (slow) dynamic attempt, e.g. when it already failed on the
    full model and this is its feature extractor.
    """
    named = _Named(module, output_name).eval()
    with quiet():
        import litert_torch  # inside quiet(): its import prints optional-kernel warnings

        litert_torch.config.show_progress = False
        result = TFLiteExport(1, fixed_reason) if fixed_reason else None
        if result is None:
            try:
                edge = litert_torch.convert(
                    named,
                    sample_kwargs={INPUT_NAME: _two_rows(sample)},
                    dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", max=MAX_BATCH)}},
                )
                result = TFLiteExport("dynamic")
            except (
                Exception
            ) as err:  # litert-torch rejects symbolic batches in many graphs (conv, broadcasts)
                why = one_line(err, 160)
                result = TFLiteExport(
                    1, f"batch fixed to 1: litert-torch cannot convert a dynamic batch ({why})"
                )
        if result.batch == 1:
            edge = litert_torch.convert(named, sample_kwargs={INPUT_NAME: sample[:1]})
        edge.export(str(path))
    return result


def _two_rows(sample: torch.Tensor) -> torch.Tensor:
    """torch.export specialises a batch of 1, so the dynamic attempt is traced with two rows."""
    return torch.cat([sample[:1], sample[:1]]) if len(sample) < 2 else sample[:2]


def quantize_tflite(float_path: Path, path: Path, calibration_x: np.ndarray) -> None:
    """Static int8 quantization (int8 weights and activations, float32 input/output) calibrated on data.

    Calibration keeps the global min/max of every tensor, as onnxruntime's MinMax does: the quantizer's
    default, a moving average of per-call ranges, clips often with batch-1 calls (-11 points on MNIST-1D).
    """
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.utils.qsv_utils import min_max_update

    qt = quantizer.Quantizer(str(float_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    # Keep the graph's input and output float32 so int8 and float artifacts are called the same way.
    for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        qt.update_quantization_recipe(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(qt.get_quantization_recipe())
    with quiet():
        calib = calibrator.Calibrator(
            float_path.read_bytes(),
            num_threads=min(os.cpu_count() or 1, 4),
            mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED,  # ~8x faster than keeping all tensors
            qsv_update_func=min_max_update,
        )
        calib.calibrate({_signature(float_path)[0]: _samples(float_path, calibration_x)}, recipes)
        qt.quantize(calib.get_model_qsvs(), enable_progress_report=False).export_model(
            str(path), overwrite=True
        )
    path.chmod(0o644)  # the quantizer writes an executable file


def _samples(path: Path, x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Calibration calls for the model at `path`: its batch size (64 rows when dynamic) per call."""
    _, name, batch = _signature(path)
    step = 64 if batch == "dynamic" else int(batch)
    return [{name: x[i : i + step].astype(np.float32)} for i in range(0, len(x) - step + 1, step)]


def _signature(path: Path) -> tuple[str, str, int | str]:
    """(signature key, input name, batch) of a TFLite file's only signature."""
    interpreter = tflite_interpreter_class()(model_path=str(path))
    key = next(iter(interpreter.get_signature_list()))
    inputs = interpreter.get_signature_runner(key).get_input_details()
    name = next(iter(inputs))
    first = int(inputs[name]["shape_signature"][0])
    return key, name, "dynamic" if first < 0 else first

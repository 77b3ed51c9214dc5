"""Run an exported artifact with its real runtime (onnxruntime or a TFLite interpreter); no torch.

The device SDK mirrors this module: it is all an app needs to run a bundle's artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autohas_edge.export.errors import ExportError

#: rows per call when a runtime has a dynamic batch
CHUNK = 256


class Runner(Protocol):
    """A loaded artifact: one float32 input, one float32 output."""

    batch: int | str  # "dynamic" or the fixed batch size

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for inputs `x` of any batch size."""
        ...


def tflite_interpreter_class() -> Any:
    """The TFLite `Interpreter` class: ai-edge-litert's, else tflite_runtime's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as err:
            raise ExportError(
                "tflite", "no TFLite interpreter: install ai-edge-litert or tflite-runtime"
            ) from err
    return Interpreter


class OnnxRunner:
    """An ONNX artifact in an onnxruntime CPU session."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        first = self.session.get_inputs()[0].shape[0]
        self.batch: int | str = first if isinstance(first, int) else "dynamic"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for `x`, in chunks (or one row at a time for a fixed batch of 1)."""
        step = CHUNK if self.batch == "dynamic" else int(self.batch)
        parts = [
            self.session.run([self.output_name], {self.input_name: x[i : i + step]})[0]
            for i in range(0, len(x), step)
        ]
        return np.concatenate(parts)

    def io(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Input and output specs `{name, shape, dtype}` as the manifest records them."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        return [_onnx_spec(a) for a in inputs], [_onnx_spec(a) for a in outputs]


class TFLiteRunner:
    """A TFLite artifact in a TFLite interpreter, called through its (single) signature."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        interpreter_class = tflite_interpreter_class()
        self.interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        self.signature = self.interpreter.get_signature_runner()
        inputs = self.signature.get_input_details()
        outputs = self.signature.get_output_details()
        self.input_name, self.output_name = next(iter(inputs)), next(iter(outputs))
        self._inputs, self._outputs = inputs, outputs
        dims = list(inputs[self.input_name]["shape_signature"])
        self.batch: int | str = "dynamic" if dims[0] < 0 else int(dims[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for `x`, `batch` rows per call (a fixed-batch model is called once per row)."""
        step = CHUNK if self.batch == "dynamic" else int(self.batch)
        parts = [
            np.array(self.signature(**{self.input_name: x[i : i + step]})[self.output_name])
            for i in range(0, len(x), step)
        ]
        return np.concatenate(parts)

    def io(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Input and output specs `{name, shape, dtype}` as the manifest records them."""
        return (
            [_tflite_spec(n, d) for n, d in self._inputs.items()],
            [_tflite_spec(n, d) for n, d in self._outputs.items()],
        )


def load_runner(
    path: str | Path, runtime: str, num_threads: int | None = None
) -> OnnxRunner | TFLiteRunner:
    """Load `path` with the runtime named `runtime` ("onnx" or "tflite")."""
    if runtime == "onnx":
        return OnnxRunner(path, num_threads)
    if runtime == "tflite":
        return TFLiteRunner(path, num_threads)
    raise ExportError(path, f"unknown runtime {runtime!r}")


_ONNX_DTYPES = {"float": "float32", "double": "float64", "float16": "float16"}


def _onnx_spec(arg: Any) -> dict[str, Any]:
    dtype = arg.type.removeprefix("tensor(").removesuffix(")")
    shape = [d if isinstance(d, int) else "batch" for d in arg.shape]
    return {"name": arg.name, "shape": shape, "dtype": _ONNX_DTYPES.get(dtype, dtype)}


def _tflite_spec(name: str, detail: dict[str, Any]) -> dict[str, Any]:
    shape = [int(d) if d >= 0 else "batch" for d in detail["shape_signature"]]
    return {"name": name, "shape": shape, "dtype": np.dtype(detail["dtype"]).name}

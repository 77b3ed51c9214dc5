"""Inference runtimes: one small interface, concrete backends imported lazily by name."""

from __future__ import annotations

import importlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.device_sdk._telemetry import disable_events
from autohas_edge.device_sdk.bundle import AUTO_ORDER, Artifact
from autohas_edge.device_sdk.errors import BundleError, RuntimeUnavailableError


class Runtime(ABC):
    """Runs one artifact on float32 `[n, *input_shape]` and returns its float32 `[n, k]` output."""

    def __init__(self, path: Path, artifact: Artifact, threads: int | None = None) -> None:
        self.path = Path(path)
        self.artifact = artifact
        self.threads = threads
        self.fixed_batch: int | None = artifact.batch  # backends correct this from the file itself

    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run exactly one batch the artifact accepts."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run any number of rows; fixed-batch artifacts (e.g. batch-1 TFLite) are fed in slices."""
        fixed = self.fixed_batch
        if fixed is None:
            return self._run(x)
        outs = []
        for start in range(0, len(x), fixed):
            rows = x[start : start + fixed]
            pad = fixed - len(rows)
            if pad:  # the last slice of a batch-N artifact: pad with copies, drop their outputs
                rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
            outs.append(self._run(rows)[: fixed - pad])
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


class OnnxRuntime(Runtime):
    """onnxruntime CPU backend."""

    def __init__(self, path: Path, artifact: Artifact, threads: int | None = None) -> None:
        super().__init__(path, artifact, threads)
        self._session = onnx_session(self.path, threads)
        first = self._session.get_inputs()[0]
        self._input = first.name
        batch_dim = first.shape[0] if first.shape else None
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: x})[0], dtype=np.float32)


class TfliteRuntime(Runtime):
    """TFLite interpreter backend (ai_edge_litert, else tflite_runtime); handles int8 I/O."""

    def __init__(self, path: Path, artifact: Artifact, threads: int | None = None) -> None:
        super().__init__(path, artifact, threads)
        self._interp = tflite_interpreter(self.path, threads)
        try:
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(
                f"the TFLite interpreter cannot load {self.path.name}: {exc}"
            ) from exc
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._shape = tuple(int(d) for d in self._in["shape"])
        signature = self._in.get("shape_signature", self._in["shape"])
        self.fixed_batch = int(signature[0]) if len(signature) and int(signature[0]) > 0 else None
        self._lock = threading.Lock()  # an Interpreter is not thread-safe

    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if x.shape != self._shape:
                self._interp.resize_tensor_input(self._in["index"], list(x.shape))
                self._interp.allocate_tensors()
                self._shape = x.shape
                self._out = self._interp.get_output_details()[0]
            self._interp.set_tensor(self._in["index"], _quantize(x, self._in))
            self._interp.invoke()
            return _dequantize(self._interp.get_tensor(self._out["index"]), self._out)


def onnx_session(path: Path, threads: int | None) -> Any:
    """An onnxruntime CPU session of `path` (BundleError when the file does not load)."""
    ort = _import("onnxruntime", "onnxruntime")
    disable_events(ort)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own hierarchy; any failure means a bad file
        raise BundleError(f"onnxruntime cannot load {path.name}: {exc}") from exc


def tflite_interpreter(path: Path, threads: int | None) -> Any:
    """A TFLite interpreter of `path` (BundleError when the file does not load)."""
    module = _import_tflite()
    try:
        return module.Interpreter(model_path=str(path), num_threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise BundleError(f"the TFLite interpreter cannot load {path.name}: {exc}") from exc


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    quantized: np.ndarray = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return quantized


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return np.array(y, dtype=np.float32)
    scale, zero = detail["quantization"]
    dequantized: np.ndarray = ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return dequantized


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeUnavailableError(f"{module} is not installed (pip install {package})") from exc


def _import_tflite() -> Any:
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeUnavailableError(
        "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)"
    )


#: runtime family -> (backend class, the module whose presence makes it usable)
RUNTIMES: dict[str, tuple[type[Runtime], tuple[str, ...]]] = {
    "onnx": (OnnxRuntime, ("onnxruntime",)),
    "tflite": (TfliteRuntime, ("ai_edge_litert", "tflite_runtime")),
}


def available_runtimes() -> list[str]:
    """Runtime families whose Python package is installed, without importing it."""
    return [name for name, (_, mods) in RUNTIMES.items() if any(_installed(m) for m in mods)]


def runnable_formats(have: Iterable[str]) -> list[str]:
    """The formats of `have` whose runtime is installed here, in the order `format="auto"` tries."""
    wanted, runtimes = set(have), available_runtimes()
    return [f for f in AUTO_ORDER if f in wanted and f.split("-")[0] in runtimes]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def open_runtime(bundle_dir: Path, artifact: Artifact, threads: int | None = None) -> Runtime:
    """Load one artifact of a bundle with its runtime family's backend."""
    cls, _ = RUNTIMES[artifact.runtime]
    return cls(Path(bundle_dir) / artifact.file, artifact, threads)

"""Measured inference latency of a final model: ONNX export, then ONNX Runtime on one thread.

The latency depends on the architecture alone, so it is measured once per architecture per process.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RUNS, WARMUP_RUNS = 200, 20
_cache: dict[str, float] = {}


def export(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """The model (eval mode) as an ONNX file with a batch-1 input."""
    sample = torch.zeros((1, *input_shape))
    # the TorchScript exporter: a fraction of the dynamo exporter's time for these plain graphs
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (sample,), str(path), dynamo=False, input_names=["x"])


def time_onnx(path: Path, input_shape: tuple[int, ...]) -> float:
    """Median milliseconds per single-example inference, ONNX Runtime with one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(0).normal(size=(1, *input_shape)).astype(np.float32)}
    for _ in range(WARMUP_RUNS):
        session.run(None, feed)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def latency_ms(model: torch.nn.Module, model_args: dict, input_shape: tuple[int, ...]) -> float:
    """The model's measured latency in milliseconds (cached by architecture)."""
    key = json.dumps(model_args, sort_keys=True)
    if key not in _cache:
        with tempfile.TemporaryDirectory(prefix="suite-onnx-") as tmp:
            path = Path(tmp) / "model.onnx"
            export(model, input_shape, path)
            _cache[key] = time_onnx(path, input_shape)
    return _cache[key]

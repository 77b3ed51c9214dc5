"""Latency measured on ONNX Runtime on this machine: per model, and a per-candidate table per space.

A model's latency is the median time of a batch-1 inference of its ONNX export (TorchScript
exporter) on ONNX Runtime's CPU provider with one thread. The search needs an expectation under the
encodings, so a table gives every candidate of every architecture choice an additive cost in
milliseconds (plus an intercept), fitted by ridge least squares to the measured latencies of random
architectures of the space: built once per (space, input shape, classes, runtime, machine) and
cached on disk (`$AUTOHAS_EDGE_CACHE`, default `~/.cache/autohas-edge`). The derived model's own
latency is measured, not predicted.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autohas_edge.common.fs import atomic_write_json, read_json
from autohas_edge.server.search.models import Layout, ModelArgs, build_model, model_args_for
from autohas_edge.server.search.space import SearchSpace

RUNS, WARMUP_RUNS = 200, 20
#: random architectures measured per table coefficient (at least MIN_SAMPLES in all)
SAMPLES_PER_COEFFICIENT, MIN_SAMPLES = 2, 16
RIDGE = 1e-3
_measured: dict[str, float] = {}


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """The model (eval mode) as an ONNX file with a batch-1 input named "x"."""
    sample = torch.zeros((1, *input_shape))
    # the TorchScript exporter: a fraction of the dynamo exporter's time for these plain graphs
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (sample,), str(path), dynamo=False, input_names=["x"])


def time_onnx(path: Path, input_shape: tuple[int, ...]) -> float:
    """Median milliseconds of a single-example inference on ONNX Runtime with one thread."""
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


def measure_latency_ms(model_args: ModelArgs) -> float:
    """The measured latency of the model `model_args` describes (cached per process)."""
    key = json.dumps(model_args, sort_keys=True)
    if key not in _measured:
        shape = tuple(model_args["input_shape"])
        with tempfile.TemporaryDirectory(prefix="autohas-latency-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(build_model(model_args), shape, path)
            _measured[key] = time_onnx(path, shape)
    return _measured[key]


@dataclass(frozen=True)
class LatencyTable:
    """Predicted latency = intercept + the cost of every choice's chosen candidate (ms)."""

    intercept: float
    costs: dict[str, list[float]]  # choice name -> per-candidate ms, in candidate order
    samples: int
    fit_error_ms: float  # median absolute error of the fit on its own samples

    def predict(self, space: SearchSpace, arch: dict[str, Any]) -> float:
        """Predicted milliseconds of architecture `arch`."""
        total = self.intercept
        for choice in space.arch:
            if choice.name in self.costs:  # a one-candidate choice costs the same everywhere
                total += self.costs[choice.name][choice.candidates.index(arch[choice.name])]
        return total

    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected milliseconds under the architecture encoding (differentiable)."""
        total = torch.tensor(self.intercept)
        for name, ms in self.costs.items():
            p = probs[name]
            total = (
                total.to(p.device) + (p * torch.tensor(ms, dtype=p.dtype, device=p.device)).sum()
            )
        return total

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "intercept": self.intercept,
            "costs": self.costs,
            "samples": self.samples,
            "fit_error_ms": self.fit_error_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyTable:
        """Inverse of `to_json`."""
        costs = {k: [float(v) for v in vs] for k, vs in data["costs"].items()}
        return cls(
            float(data["intercept"]), costs, int(data["samples"]), float(data["fit_error_ms"])
        )


def fit_table(
    space: SearchSpace, archs: list[dict[str, Any]], measured: list[float]
) -> LatencyTable:
    """Ridge least squares of the measured latencies on one-hot candidate features."""
    searched = [c for c in space.arch if len(c) > 1]
    columns = [(c.name, i) for c in searched for i in range(len(c))]
    by_name = {c.name: c for c in searched}
    x = np.zeros((len(archs), len(columns) + 1))
    x[:, -1] = 1.0  # the intercept
    for row, arch in enumerate(archs):
        for col, (name, i) in enumerate(columns):
            x[row, col] = float(by_name[name].candidates.index(arch[name]) == i)
    y = np.asarray(measured)
    penalty = RIDGE * len(archs) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    beta = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    costs: dict[str, list[float]] = {c.name: [] for c in searched}
    for (name, _), value in zip(columns, beta[:-1], strict=True):
        costs[name].append(float(value))
    error = float(np.median(np.abs(x @ beta - y)))
    return LatencyTable(float(beta[-1]), costs, len(archs), error)


def build_table(
    space: SearchSpace,
    layout: Layout,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
) -> LatencyTable:
    """Measure random architectures of `space` and fit the table."""
    coefficients = sum(len(c) for c in space.arch if len(c) > 1) + 1
    n = max(MIN_SAMPLES, SAMPLES_PER_COEFFICIENT * coefficients)
    rng = random.Random(seed)
    archs = [{c.name: rng.choice(c.candidates) for c in space.arch} for _ in range(n)]
    measured = [
        measure_latency_ms(model_args_for(layout, input_shape, num_classes, arch)) for arch in archs
    ]
    return fit_table(space, archs, measured)


def cache_dir() -> Path:
    """Where latency tables are kept."""
    return Path(os.environ.get("AUTOHAS_EDGE_CACHE", Path.home() / ".cache" / "autohas-edge"))


def cached_table(
    space: SearchSpace, layout: Layout, input_shape: tuple[int, ...], num_classes: int
) -> LatencyTable:
    """The table for this space on this machine and runtime: from the cache, or built and cached."""
    import onnxruntime as ort

    key = {
        "space": space.to_json(),
        "family": layout.family,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "onnxruntime": ort.__version__,
        "machine": [platform.machine(), platform.processor(), platform.node()],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"latency-{digest}.json"
    if path.exists():
        return LatencyTable.from_json(read_json(path))
    table = build_table(space, layout, input_shape, num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, table.to_json())
    return table

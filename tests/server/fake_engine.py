"""A fast stand-in for the search engine with the adapter's interface (`server.engine`), for job tests.

It reads the snapshot, "searches" for `spec.steps` steps (default 20) of `AUTOHAS_FAKE_STEP_S` seconds
(default 0.01), checkpoints every step to `search.json`, resumes from it, honours `should_stop`, and
writes a `result.json`. `strategy="fail"` makes it raise. `export_bundle` writes a small bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.server import engine
from autohas_edge.server.engine import Cancelled


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def check_spec(spec: dict[str, Any]) -> None:
    """The real adapter's checks, except that strategy "fail" is allowed (it makes `run_job` raise)."""
    engine.check_spec({**spec, "strategy": ""} if spec.get("strategy") == "fail" else spec)


def run_job(
    spec: dict[str, Any],
    dataset: str,
    out_dir: str,
    device: str,
    on_progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    workers: int = 1,
) -> dict[str, Any]:
    """Pretend to search; see the module docstring."""
    if spec.get("strategy") == "fail":
        raise RuntimeError("the fake engine was told to fail")
    with np.load(dataset) as data:
        x, y = data["x"], data["y"]
    run, steps = Path(out_dir), int(spec.get("steps") or 20)
    checkpoint = run / "search.json"
    start = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    delay = float(os.environ.get("AUTOHAS_FAKE_STEP_S", "0.01"))
    for step in range(start + 1, steps + 1):
        if should_stop():
            raise Cancelled(f"stopped at step {step}")
        time.sleep(delay)
        _write_json(checkpoint, {"step": step})
        p = 1.0 / (1 + step)
        on_progress(
            {
                "stage": "search",
                "step": step,
                "total_steps": steps,
                "train_loss": 1.0 / step,
                "val_loss": 1.5 / step,
                "learning_rate": 0.1,
                "encodings": [
                    {"name": "block0.kernel", "candidates": ["3", "5"], "probabilities": [1 - p, p]}
                ],
            }
        )
    for stage in ("retrain", "evaluate", "done"):
        on_progress({"stage": stage, "step": steps, "total_steps": steps})
    result = {
        "architecture": {"block0.kernel": 3},
        "hyperparameters": {"learning_rate": 0.1},
        "params": 1234,
        "test_accuracy": 0.5,
        "search_seconds": 1.0,
        "retrain_seconds": 0.5,
        "resumed_from": start,
        "examples": len(x),
        "labels": sorted(set(y.tolist())),
        "device": device,
        "pid": os.getpid(),
    }
    _write_json(run / "result.json", result)
    return result


def export_bundle(run_dir: str, out_dir: str, formats: list[str]) -> None:
    """Write a small bundle: manifest.json, model.onnx (random bytes) and head.npz."""
    out = Path(out_dir)
    out.mkdir(parents=True)
    result = json.loads((Path(run_dir) / "result.json").read_text())
    (out / "model.onnx").write_bytes(np.random.default_rng(0).bytes(300_000))
    np.savez(out / "head.npz", weight=np.zeros((3, 4), np.float32), bias=np.zeros(3, np.float32))
    artifacts = [{"format": f, "role": "model", "file": "model.onnx"} for f in formats or ["onnx"]]
    files = {
        p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
        for p in out.iterdir()
    }
    manifest = {
        "schema_version": 1,
        "artifacts": artifacts,
        "files": files,
        "params": result["params"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest))

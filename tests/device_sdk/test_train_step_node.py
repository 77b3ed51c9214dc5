"""Fine-tuning outside Python: the bundle's ONNX train-step graph run by onnxruntime-node (Node.js).

The JavaScript (tests/device_sdk/node/train_step.mjs) is what a React Native or Electron app would
write: it replays the SDK's batches from the start state, feeding each `new_<name>` back, and must
end at the Python SDK's weights (1e-5). Node.js and onnxruntime-node come from `tools.node_setup`
(`make test` runs it first; the machine's node or the dev extra's wheel): the test never skips.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.device_sdk import Hub, Manifest
from autohas_edge.device_sdk.finetune import (
    OPTIMIZERS,
    Head,
    HeadHyperparameters,
    StepFunction,
    train_head,
)
from autohas_edge.device_sdk.train_graph import StepState, TrainStepGraph, open_train_step
from autohas_edge.server.demo.population import User
from tests.device_sdk.helpers import TASK, fine_tune_inputs
from tools import node_setup

TOLERANCE = 1e-5
SCRIPT = node_setup.NODE_DIR / "train_step.mjs"
#: besides the bundle's own hyper-parameters: (learning_rate, weight_decay, label_smoothing)
OTHERS = {"sgd": (0.05, 1e-3, 0.1), "rmsprop": (0.003, 0.0, 0.1), "adam": (0.01, 1e-2, 0.05)}


@dataclass
class _Run:
    """One fine-tune by the Python SDK through its graph, with every step's batch and loss kept."""

    hp: HeadHyperparameters
    graph: TrainStepGraph
    batches: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def start(self, hp: HeadHyperparameters, head: Head) -> StepFunction | None:
        """`finetune.HeadTrainer`: the graph's step function, recording as it goes."""
        step = self.graph.start(hp, head)
        assert step is not None

        def recording(features: np.ndarray, labels: np.ndarray) -> float:
            self.batches.append((np.array(features, np.float32), np.array(labels, np.int32)))
            self.losses.append(step(features, labels))
            return self.losses[-1]

        return recording

    def job(self, start: Head) -> dict[str, Any]:
        """The run for train_step.mjs: start state, hyper-parameters, batches."""
        state = StepState.start(start)
        inputs = {f.name: _tensor(getattr(state, f.name), "float32") for f in fields(state)}
        inputs["step"] = _tensor(state.step, "int32")
        for name in ("learning_rate", "weight_decay", "label_smoothing"):
            inputs[name] = _tensor(getattr(self.hp, name), "float32")
        inputs["optimizer"] = _tensor(OPTIMIZERS.index(self.hp.optimizer), "int32")
        batches = [{"features": _tensor(x, "float32"), "labels": _tensor(y, "int32")}
                   for x, y in self.batches]  # fmt: skip
        return {"inputs": inputs, "batches": batches}


def _tensor(value: Any, dtype: str) -> dict[str, Any]:
    array = np.asarray(value, dtype=dtype)
    return {"dtype": dtype, "dims": list(array.shape), "data": array.ravel().tolist()}


def _settings(hp: HeadHyperparameters) -> list[HeadHyperparameters]:
    others = [
        replace(hp, optimizer=name, learning_rate=lr, weight_decay=wd, label_smoothing=ls)
        for name, (lr, wd, ls) in OTHERS.items()
    ]
    return [hp, *others]


def _node(graph: Path, runs: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """train_step.mjs on `runs`; its per-run losses and final state."""
    node = node_setup.ensure()
    job, result = tmp_path / "job.json", tmp_path / "result.json"
    job.write_text(json.dumps({"runs": runs}))
    command = [str(node), str(SCRIPT), str(graph), str(job), str(result)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(result.read_text())
    assert out["versions"]["node"]  # it was onnxruntime-node that ran
    return list(out["runs"])


def _error(got: Any, want: Any) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want))) / max(1.0, float(np.abs(want).max()))


def test_node_fine_tune_reaches_the_python_sdks_weights(
    hub: Hub, bundle_dir: Path, skewed_user: User, tmp_path: Path
) -> None:
    """`Model.fine_tune`'s steps and every optimiser's, replayed in Node.js: the same weights (1e-5)."""
    model = hub.model(TASK, app_id="com.node", private=True, format="onnx")
    manifest = Manifest.load(bundle_dir)
    graph = open_train_step(bundle_dir, manifest, "onnx", threads=1)
    assert graph is not None
    base, x, y, hp = fine_tune_inputs(model, skewed_user.x_tune, skewed_user.y_tune)
    runs, heads = [_Run(setting, graph) for setting in _settings(hp)], []
    for run in runs:
        heads.append(train_head(base, x, y, run.hp, 0, run)[0])
    assert model.fine_tune(skewed_user.x_tune, skewed_user.y_tune).accepted
    eval_features = model.embed(heads[0].align(skewed_user.x_eval))
    # the first run is the SDK's own fine-tune, bit for bit
    np.testing.assert_array_equal(model.logits(skewed_user.x_eval), heads[0].logits(eval_features))

    results = _node(graph.path, [run.job(base) for run in runs], tmp_path)
    for run, head, got in zip(runs, heads, results, strict=True):
        state = got["state"]
        assert len(got["losses"]) == len(run.batches) >= 30
        assert state["step"]["data"] == [len(run.batches)]
        assert _error(got["losses"], run.losses) <= TOLERANCE, run.hp.optimizer
        assert (
            _error(np.reshape(state["weight"]["data"], head.weight.shape), head.weight) <= TOLERANCE
        )
        assert _error(state["bias"]["data"], head.bias) <= TOLERANCE
        assert _error(head.weight, base.weight) > 100 * TOLERANCE  # the steps moved the weights

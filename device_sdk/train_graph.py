"""Fine-tune the head through the bundle's train-step graph (docs/architecture.md §5); no torch.

A bundle exported with train-step graphs carries `train_step.onnx` and `train_step.tflite`: one
optimiser step of `finetune.train_head` as a plain inference graph (stock onnxruntime / TFLite
interpreter, default-domain / builtin ops only). `TrainStepGraph` runs it with the bundle's runtime;
`Engine.trainer` hands one to `train_head`, which falls back to the numpy reference for bundles
without such a graph. The contract (`manifest["fine_tuning"]["train_step"]`):

- inputs: `features` [n, D] float32, `labels` [n] int32 (a label outside [0, C), e.g. -1, marks a
  padding row: it adds nothing and is not counted), `weight` [C, D], `bias` [C], the optimiser state
  `m_weight`, `m_bias`, `v_weight`, `v_bias` (zeros at the start) and `step` (int32, 0 at the start),
  and the scalars `learning_rate`, `weight_decay`, `label_smoothing` (float32) and `optimizer` (int32:
  the index in `finetune.OPTIMIZERS`, sgd 0, adam 1, rmsprop 2);
- outputs: `loss` (the batch's mean loss before the step) and `new_<name>` for the weight, the bias,
  the four state tensors and the step, to feed back as the next step's inputs.

The ONNX graph takes any batch; the TFLite graph a fixed one (litert-torch cannot lower a dynamic
batch here), which the runner fills with padding rows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from autohas_edge.device_sdk.bundle import Manifest, verify_files
from autohas_edge.device_sdk.errors import BundleError, InvalidInputError
from autohas_edge.device_sdk.finetune import OPTIMIZERS, Head, HeadHyperparameters, StepFunction
from autohas_edge.device_sdk.runtime import onnx_session, tflite_interpreter

#: the manifest key under `fine_tuning` that holds the contract
CONTRACT_KEY = "train_step"
#: the label of a padding row (any value outside [0, C) is one)
PADDING_LABEL = -1
#: graph inputs, in the contract's order
INPUTS = (
    "features",
    "labels",
    "weight",
    "bias",
    "m_weight",
    "m_bias",
    "v_weight",
    "v_bias",
    "step",
    "learning_rate",
    "weight_decay",
    "label_smoothing",
    "optimizer",
)
#: the tensors a step updates: each is an input `name` and an output `new_<name>`
UPDATED = ("weight", "bias", "m_weight", "m_bias", "v_weight", "v_bias", "step")
OUTPUTS = ("loss", *(f"new_{name}" for name in UPDATED))


@dataclass(frozen=True)
class StepState:
    """The head and the optimiser state between two steps (`step`: steps done so far)."""

    weight: np.ndarray  # [C, D] float32
    bias: np.ndarray  # [C] float32
    m_weight: np.ndarray
    m_bias: np.ndarray
    v_weight: np.ndarray
    v_bias: np.ndarray
    step: int = 0

    @classmethod
    def start(cls, head: Head) -> StepState:
        """The state before the first step on `head`: zero moments, step 0."""
        w, b = np.array(head.weight, np.float32), np.array(head.bias, np.float32)  # copies
        zw, zb = np.zeros_like(w), np.zeros_like(b)
        return cls(w, b, zw, zb, zw.copy(), zb.copy(), 0)


@dataclass(frozen=True)
class GraphSpec:
    """One runtime's train-step graph as the manifest records it."""

    runtime: str  # "onnx" | "tflite"
    file: str
    batch: int | None  # None: any batch; an int: exactly that many rows (padded by the runner)

    @classmethod
    def from_contract(cls, contract: Mapping[str, Any], runtime: str) -> GraphSpec | None:
        """The graph of `runtime` in a `train_step` contract, or None when it has none."""
        graph = (contract.get("graphs") or {}).get(runtime)
        if not isinstance(graph, Mapping) or "file" not in graph:
            return None
        batch = graph.get("batch", "dynamic")
        fixed = None if batch in ("dynamic", None, -1) else int(batch)
        return cls(runtime, str(graph["file"]), fixed)


class TrainStepGraph:
    """A bundle's train-step graph in its runtime; `step` runs one optimiser step.

    It is also a `finetune.HeadTrainer`: `train_head(..., trainer=graph)` runs every step here.
    The runtime session is created on the first step and reused (thread-safe).
    """

    def __init__(
        self,
        path: str | Path,
        spec: GraphSpec,
        num_classes: int,
        feature_dim: int,
        threads: int | None = None,
    ) -> None:
        self.path, self.spec = Path(path), spec
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.threads = threads
        self._session: _Session | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> str:
        """The runtime family that runs the graph: "onnx" or "tflite"."""
        return self.spec.runtime

    def supports(self, hp: HeadHyperparameters) -> bool:
        """False when `hp`'s batches do not fit a fixed-batch graph."""
        return self.spec.batch is None or hp.batch_size <= self.spec.batch

    def start(self, hp: HeadHyperparameters, head: Head) -> StepFunction | None:
        """A step function that trains `head` (replacing its arrays) with `hp`; None if unsupported.

        Unsupported: batches larger than a fixed-batch graph, or a head of another shape than the
        graph's `[C, D]` (both graphs fix C; a head grown by `Model.add_class` trains in numpy).
        """
        if not self.supports(hp) or head.weight.shape != (self.num_classes, self.feature_dim):
            return None
        state = [StepState.start(head)]

        def step(features: np.ndarray, labels: np.ndarray) -> float:
            loss, state[0] = self.step(features, labels, state[0], hp)
            head.weight, head.bias = state[0].weight, state[0].bias
            return loss

        return step

    def step(
        self, features: Any, labels: Any, state: StepState, hp: HeadHyperparameters
    ) -> tuple[float, StepState]:
        """One step on a batch (`features` [n, D], `labels` [n] in [0, C)); the loss and new state."""
        feats, labs = self._batch(features, labels)
        self._check_state(state)
        feeds = {
            "features": feats,
            "labels": labs,
            **{name: _f32(getattr(state, name)) for name in UPDATED if name != "step"},
            "step": np.asarray(state.step, dtype=np.int32),
            "learning_rate": np.asarray(hp.learning_rate, dtype=np.float32),
            "weight_decay": np.asarray(hp.weight_decay, dtype=np.float32),
            "label_smoothing": np.asarray(hp.label_smoothing, dtype=np.float32),
            "optimizer": np.asarray(OPTIMIZERS.index(hp.optimizer), dtype=np.int32),
        }
        out = self._run(feeds)
        new = {name: _f32(out[f"new_{name}"]) for name in UPDATED if name != "step"}
        loss = float(np.asarray(out["loss"]).reshape(()))
        return loss, replace(state, **new, step=int(np.asarray(out["new_step"]).reshape(())))

    # -- inputs -----------------------------------------------------------------------------------

    def _batch(self, features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated float32 features and int32 labels, padded to a fixed-batch graph's rows."""
        feats = np.asarray(features, dtype=np.float32)
        labs = np.asarray(labels)
        n, d = len(feats) if feats.ndim else 0, self.feature_dim
        if feats.ndim != 2 or feats.shape[1] != d or n == 0:
            raise InvalidInputError(
                f"{self._name}: features has shape {feats.shape}, expected (n, {d}) with n >= 1"
            )
        if labs.shape != (n,):
            raise InvalidInputError(
                f"{self._name}: labels has shape {labs.shape}, expected ({n},) for {n} feature rows"
            )
        if not np.issubdtype(labs.dtype, np.integer):
            raise InvalidInputError(f"{self._name}: labels must be integers, got {labs.dtype}")
        if labs.min() < 0 or labs.max() >= self.num_classes:
            raise InvalidInputError(
                f"{self._name}: labels must be in [0, {self.num_classes}), got "
                f"{labs.min()}..{labs.max()}"
            )
        return self._pad(np.ascontiguousarray(feats), labs.astype(np.int32))

    def _pad(self, feats: np.ndarray, labs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fixed = self.spec.batch
        if fixed is None or len(labs) == fixed:
            return feats, labs
        if len(labs) > fixed:
            raise InvalidInputError(
                f"{self._name}: a batch of {len(labs)} rows does not fit this graph's {fixed}"
            )
        pad = fixed - len(labs)
        zeros = np.zeros((pad, feats.shape[1]), np.float32)
        return np.concatenate([feats, zeros]), np.concatenate(
            [labs, np.full(pad, PADDING_LABEL, np.int32)]
        )

    def _check_state(self, state: StepState) -> None:
        c, d = self.num_classes, self.feature_dim
        for f in fields(state):
            if f.name == "step":
                continue
            value = getattr(state, f.name)
            expected = (c, d) if f.name.endswith("weight") else (c,)
            if not isinstance(value, np.ndarray) or value.shape != expected:
                shape = getattr(value, "shape", type(value).__name__)
                raise InvalidInputError(
                    f"{self._name}: {f.name} has shape {shape}, expected {expected}"
                )
        if int(state.step) < 0:
            raise InvalidInputError(f"{self._name}: step must be >= 0, got {state.step}")

    @property
    def _name(self) -> str:
        return f"train-step graph {self.path.name}"

    # -- the runtime ------------------------------------------------------------------------------

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._session is None:
                self._session = _open_session(self.path, self.spec.runtime, self.threads)
            return self._session.run(feeds)


class _Session(Protocol):
    """A loaded train-step graph: named inputs in, named outputs out."""

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class _OnnxSession:
    def __init__(self, path: Path, threads: int | None) -> None:
        self._session = onnx_session(path, threads)
        _check_names(path, [a.name for a in self._session.get_inputs()], INPUTS, "input")
        self._outputs = [a.name for a in self._session.get_outputs()]
        _check_names(path, self._outputs, OUTPUTS, "output")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds), strict=True))


class _TfliteSession:
    def __init__(self, path: Path, threads: int | None) -> None:
        interpreter = tflite_interpreter(path, threads)
        try:
            self._runner = interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"the TFLite interpreter cannot load {path.name}: {exc}") from exc
        self._interpreter = interpreter  # the runner needs it alive
        _check_names(path, list(self._runner.get_input_details()), INPUTS, "input")
        _check_names(path, list(self._runner.get_output_details()), OUTPUTS, "output")

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self._runner(**feeds).items()}


def _open_session(path: Path, runtime: str, threads: int | None) -> _Session:
    if runtime == "onnx":
        return _OnnxSession(path, threads)
    if runtime == "tflite":
        return _TfliteSession(path, threads)
    raise BundleError(f"{path.name}: no train-step runner for runtime {runtime!r}")


def _check_names(path: Path, have: list[str], want: tuple[str, ...], what: str) -> None:
    missing = [name for name in want if name not in have]
    if missing:
        raise BundleError(f"{path.name} is not a train-step graph: it has no {what} {missing[0]!r}")


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def open_train_step(
    bundle_dir: Path, manifest: Manifest, fmt: str, threads: int | None = None
) -> TrainStepGraph | None:
    """The train-step graph for `fmt`'s runtime (hash-checked), or None for a bundle without one."""
    contract = manifest.raw.get("fine_tuning", {}).get(CONTRACT_KEY)
    spec = GraphSpec.from_contract(contract, fmt.split("-")[0]) if contract else None
    if spec is None:
        return None
    verify_files(bundle_dir, manifest, [spec.file])
    ft = manifest.fine_tuning
    return TrainStepGraph(
        Path(bundle_dir) / spec.file, spec, ft.num_classes, ft.feature_dim, threads
    )

"""The head's train-step graph: one fine-tuning step as a plain inference graph, in ONNX and TFLite.

`HeadTrainStep` writes one step of the SDK's numpy head training (`device_sdk/finetune.py`:
label-smoothed softmax cross-entropy, then the sgd / adam / rmsprop update with decoupled weight
decay) as explicit torch code, gradients in closed form (no autograd), so that a stock runtime can
fine-tune on a device: no training build of onnxruntime, no Flex ops. `export_train_steps` converts it
(ONNX through torch.onnx, TFLite through litert-torch), refuses a graph with any op outside the
default ONNX domain / the TFLite builtins, and checks it against the numpy reference, one step and a
whole fine-tune, both to `TOLERANCE`, with the SDK's own runner (`device_sdk/train_graph.py`). The
contract it returns goes into the manifest (`fine_tuning.train_step`, docs/architecture.md §5).
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autohas_edge.device_sdk.finetune import (
    ADAM_BETAS,
    DEFAULT_TRAINABLE,
    EPS,
    MOMENTUM,
    OPTIMIZERS,
    RMSPROP_ALPHA,
    Head,
    HeadHyperparameters,
    numpy_step,
    train_head,
)
from autohas_edge.device_sdk.train_graph import (
    INPUTS,
    OUTPUTS,
    PADDING_LABEL,
    GraphSpec,
    StepState,
    TrainStepGraph,
)
from autohas_edge.export.errors import ExportError, VerificationError, one_line
from autohas_edge.export.manifest import TRAIN_STEP_FILES
from autohas_edge.export.quiet import quiet
from autohas_edge.export.runtimes import load_runner

#: the largest batch the ONNX graph accepts (torch.export needs a bound)
MAX_BATCH = 1 << 16
#: largest |graph - numpy| allowed on the loss, weights and bias, times max(1, max |numpy|)
TOLERANCE = 1e-5
#: optimiser steps of the whole fine-tune checked at export (at least)
FINE_TUNE_STEPS = 30
#: the constant inside the loss's logarithm (finetune.loss_and_grads: log(p + 1e-12))
LOG_EPS = 1e-12
#: the logit spread of the edge-case batch's extreme row (p down to e^-60, below 1e-12 and float32's
#: rounding of large logits still far inside `TOLERANCE`)
EDGE_SPREAD = 60.0
#: ONNX ops must be in the default domain ("" is "ai.onnx")
ONNX_DOMAINS = ("", "ai.onnx")
#: (learning_rate, weight_decay, label_smoothing) checked for each optimiser besides the bundle's own
#: hyper-parameters: typical effective rates (the search's Adam runs at 0.03x, RMSprop at 0.01x of SGD)
CHECK_SETTINGS = {
    "sgd": (0.05, 1e-3, 0.1),
    "adam": (0.003, 0.03, 0.1),
    "rmsprop": (0.001, 0.1, 0.1),
}

EQUATIONS = (
    "n = number of rows whose label is in [0, C) (other rows are padding and add nothing)",
    "logits = features @ weight.T + bias; p = softmax(logits) row-wise (row maximum subtracted)",
    "target = label_smoothing / C + (1 - label_smoothing) * onehot(labels)",
    "loss = -sum(target * log(p + 1e-12)) / n, of the weights before the step",
    "dlogits = (p - target) / n; g_weight = dlogits.T @ features; g_bias = sum of dlogits over rows",
    "t = step + 1 (new_step); bias corrections 1 - beta^t are computed as -expm1(t * ln(beta))",
    "sgd (optimizer 0): m = 0.9 * m + g; d = m",
    "adam (optimizer 1): m = 0.9 * m + 0.1 * g; v = 0.999 * v + 0.001 * g^2; "
    "d = (m / (1 - 0.9^t)) / (sqrt(v / (1 - 0.999^t)) + 1e-8)",
    "rmsprop (optimizer 2): v = 0.99 * v + 0.01 * g^2; d = g / (sqrt(v) + 1e-8)",
    "new_weight = weight - (learning_rate * d_weight + learning_rate * weight_decay * weight)",
    "new_bias = bias - learning_rate * d_bias (no weight decay on the bias)",
    "state an optimiser does not use (v for sgd, m for rmsprop) is passed through unchanged",
)


class HeadTrainStep(torch.nn.Module):
    """One fine-tuning step of a `[C, D]` linear head; the inputs and outputs of the contract."""

    classes: torch.Tensor  # the class ids 0..C-1 (a buffer: a constant of the graph)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("classes", torch.arange(num_classes, dtype=torch.int32))

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        m_weight: torch.Tensor,
        m_bias: torch.Tensor,
        v_weight: torch.Tensor,
        v_bias: torch.Tensor,
        step: torch.Tensor,
        learning_rate: torch.Tensor,
        weight_decay: torch.Tensor,
        label_smoothing: torch.Tensor,
        optimizer: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The loss before the step, and every updated tensor as `new_<name>`."""
        onehot = (labels.unsqueeze(1) == self.classes.unsqueeze(0)).to(torch.float32)
        loss, g_weight, g_bias = cross_entropy_grads(
            features, onehot, weight, bias, label_smoothing
        )
        new_step = step + 1
        t = new_step.to(torch.float32)
        choice = (optimizer == 0, optimizer == 1, optimizer == 2)
        corrections = (bias_correction(t, ADAM_BETAS[0]), bias_correction(t, ADAM_BETAS[1]))
        d_weight, new_m_weight, new_v_weight = direction(
            g_weight, m_weight, v_weight, choice, corrections
        )
        d_bias, new_m_bias, new_v_bias = direction(g_bias, m_bias, v_bias, choice, corrections)
        new_weight = weight - (learning_rate * d_weight + (learning_rate * weight_decay) * weight)
        new_bias = bias - learning_rate * d_bias
        outputs = (
            loss,
            new_weight,
            new_bias,
            new_m_weight,
            new_m_bias,
            new_v_weight,
            new_v_bias,
            new_step,
        )
        return dict(zip(OUTPUTS, outputs, strict=True))


def cross_entropy_grads(
    features: torch.Tensor,
    onehot: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    smoothing: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean label-smoothed cross-entropy over the labelled rows and its closed-form gradients.

    `p - target` of a row's own class is written `(s - s / C) - sum of the other classes' p`, equal
    to it but exact in float32 when p is close to 1 (numpy computes it in float64).
    """
    c = float(onehot.shape[1])
    logits = features @ weight.t() + bias
    z = logits - logits.amax(dim=1, keepdim=True)
    e = torch.exp(z)
    p = e / e.sum(dim=1, keepdim=True)
    rows = onehot.sum(dim=1, keepdim=True)  # 1 for a labelled row, 0 for padding
    n = rows.sum()
    target = smoothing / c + onehot * (1.0 - smoothing)
    loss = -(target * torch.log(p + LOG_EPS) * rows).sum() / n
    others = (p * (1.0 - onehot)).sum(dim=1, keepdim=True)
    own = (smoothing - smoothing / c) - others
    dlogits = torch.where(onehot > 0.5, own, p - smoothing / c) * (rows / n)
    return loss, dlogits.t() @ features, dlogits.sum(dim=0)


def bias_correction(t: torch.Tensor, beta: float) -> torch.Tensor:
    """`1 - beta**t` to float32 precision: -expm1(x) = -2u / (1 - u), u = tanh(x / 2), x = t ln(beta).

    `1 - pow(beta, t)` in float32 would lose 1e-5 of it (1 - float32(0.999) is 0.001 * (1 - 1.3e-5)).
    """
    u = torch.tanh(t * (math.log(beta) / 2.0))
    return -2.0 * u / (1.0 - u)


def direction(
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    choice: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    corrections: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d, new m, new v) of the optimiser `choice` picks (sgd, adam, rmsprop), as `_Optimizer` does."""
    is_sgd, is_adam, is_rmsprop = choice
    b1, b2 = ADAM_BETAS
    sgd_m = MOMENTUM * m + g
    adam_m = b1 * m + (1 - b1) * g
    adam_v = b2 * v + (1 - b2) * g * g
    adam_d = (adam_m / corrections[0]) / (torch.sqrt(adam_v / corrections[1]) + EPS)
    rms_v = RMSPROP_ALPHA * v + (1 - RMSPROP_ALPHA) * g * g
    rms_d = g / (torch.sqrt(rms_v) + EPS)
    d = torch.where(is_sgd, sgd_m, torch.where(is_adam, adam_d, rms_d))
    new_m = torch.where(is_sgd, sgd_m, torch.where(is_adam, adam_m, m))
    new_v = torch.where(is_rmsprop, rms_v, torch.where(is_adam, adam_v, v))
    return d, new_m, new_v


def sample_inputs(num_classes: int, feature_dim: int, batch: int) -> dict[str, torch.Tensor]:
    """Inputs of the contract's shapes and dtypes, `batch` rows (what the converters trace)."""
    c, d = num_classes, feature_dim
    generator = torch.Generator().manual_seed(0)
    scalar = torch.tensor
    return {
        "features": torch.randn(batch, d, generator=generator),
        "labels": torch.arange(batch, dtype=torch.int32) % c,
        "weight": torch.randn(c, d, generator=generator),
        "bias": torch.zeros(c),
        "m_weight": torch.zeros(c, d),
        "m_bias": torch.zeros(c),
        "v_weight": torch.zeros(c, d),
        "v_bias": torch.zeros(c),
        "step": scalar(0, dtype=torch.int32),
        "learning_rate": scalar(0.01),
        "weight_decay": scalar(0.0),
        "label_smoothing": scalar(0.0),
        "optimizer": scalar(0, dtype=torch.int32),
    }


# -- conversion and op checks ---------------------------------------------------------------------


def export_onnx_step(module: HeadTrainStep, feature_dim: int, path: Path) -> None:
    """The ONNX graph, dynamic batch, one self-contained file.

    `optimize=False`: onnxscript's rewriter takes constants within 1e-8 of 0 for 0 and drops the
    `+ 1e-8` of adam / rmsprop and the `+ 1e-12` of the loss (checked: the export fails without it).
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes: dict[str, Any] = {name: None for name in INPUTS}
    shapes["features"] = shapes["labels"] = {0: batch}
    sample = sample_inputs(module.num_classes, feature_dim, 4)
    with tempfile.TemporaryDirectory() as scratch, quiet():
        target = Path(scratch) / path.name
        torch.onnx.export(
            module,
            (),
            str(target),
            kwargs=sample,
            dynamo=True,
            optimize=False,
            external_data=False,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=shapes,
            verbose=False,
        )
        extra = sorted(p.name for p in Path(scratch).iterdir() if p.name != path.name)
        if extra:
            raise ExportError(path, f"ONNX exporter wrote extra files {extra}, expected one file")
        _strip_node_metadata(target)
        shutil.move(str(target), path)


def _strip_node_metadata(path: Path) -> None:
    """Drop the exporter's per-node metadata (stack traces, source paths): 5/6 of the file's bytes."""
    import onnx

    model = onnx.load(str(path))
    for node in _onnx_nodes(model.graph):
        node.ClearField("metadata_props")
    onnx.save(model, str(path))


def export_tflite_step(module: HeadTrainStep, feature_dim: int, batch: int, path: Path) -> None:
    """The TFLite graph with a fixed batch of `batch` rows (litert-torch cannot lower a dynamic one)."""
    sample = sample_inputs(module.num_classes, feature_dim, batch)
    with quiet():
        import litert_torch  # inside quiet(): its import prints optional-kernel warnings

        litert_torch.config.show_progress = False
        litert_torch.convert(module, sample_kwargs=sample).export(str(path))


@functools.lru_cache(maxsize=8)
def converted_graph(runtime: str, num_classes: int, feature_dim: int, batch: int) -> bytes:
    """The file of one runtime's graph (`batch`: TFLite's rows); cached, as only the shapes matter.

    The weights and the state are inputs, so every bundle with the same head shape in one process
    (a batch export, the tests) shares the seconds of conversion.
    """
    module = HeadTrainStep(num_classes).eval()
    with tempfile.TemporaryDirectory() as scratch, torch.no_grad():
        path = Path(scratch) / TRAIN_STEP_FILES[runtime]
        if runtime == "onnx":
            export_onnx_step(module, feature_dim, path)
        else:
            export_tflite_step(module, feature_dim, batch, path)
        return path.read_bytes()


def onnx_ops(path: Path) -> list[str]:
    """Every op of the ONNX file (subgraphs and functions too) as "domain::Op"; raises on others."""
    import onnx

    model = onnx.load(str(path))
    found = {f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in _onnx_nodes(model.graph)}
    for function in model.functions:
        found.add(f"{function.domain}::{function.name}")
    bad = sorted(op for op in found if op.split("::")[0] not in ONNX_DOMAINS)
    if bad:
        raise ExportError(path, f"train-step graph has ops outside the default ONNX domain: {bad}")
    return sorted(found)


def _onnx_opset(path: Path) -> int:
    """The default-domain opset the ONNX file needs (the oldest onnxruntime that runs it)."""
    import onnx

    imports = onnx.load(str(path)).opset_import
    return max(o.version for o in imports if o.domain in ONNX_DOMAINS)


def _onnx_nodes(graph: Any) -> Iterable[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in (attribute.g, *attribute.graphs):
                if sub is not None and len(sub.node):
                    yield from _onnx_nodes(sub)


def tflite_ops(path: Path) -> list[str]:
    """The builtin operators the TFLite file's subgraphs use; raises on custom (and Flex) ops."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    used: set[str] = set()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = codes[subgraph.Operators(o).OpcodeIndex()]
            # the schema keeps codes below 127 in the deprecated field as well: take the larger
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = (code.CustomCode() or b"?").decode()
                used.add(f"CUSTOM:{custom}")
            else:
                used.add(names.get(builtin, f"BUILTIN_{builtin}"))
    bad = sorted(op for op in used if op.startswith("CUSTOM:"))
    if bad:
        raise ExportError(path, f"train-step graph has non-builtin (custom / Flex) ops: {bad}")
    return sorted(used)


# -- verification against the numpy reference -----------------------------------------------------


def verify_step_graph(
    graph: TrainStepGraph,
    head: Head,
    features: np.ndarray,
    labels: np.ndarray,
    hp: HeadHyperparameters,
    name: str | Path,
) -> dict[str, Any]:
    """One step and a whole fine-tune through `graph` against numpy, for `hp` and every optimiser.

    Raises VerificationError naming `name` when any loss, weight or bias differs by more than
    `TOLERANCE` (relative to max(1, |value|)); returns the worst errors seen.
    """
    step_error = fine_tune_error = 0.0
    steps = 0
    edge_x, edge_y = edge_batch(head, features, labels, hp.batch_size)
    for setting in check_settings(hp):
        for what, x, y in (("one step", features, labels), ("one edge-case step", edge_x, edge_y)):
            error = _one_step_error(
                graph, head, x[: setting.batch_size], y[: setting.batch_size], setting
            )
            _require(error, name, f"{what} with {_describe(setting)}")
            step_error = max(step_error, error)
        tune = _fine_tune_setting(setting, len(labels))
        error = _fine_tune_error(graph, head, features, labels, tune)
        _require(
            error, name, f"a {_steps(tune, len(labels))}-step fine-tune with {_describe(tune)}"
        )
        fine_tune_error = max(fine_tune_error, error)
        steps = max(steps, _steps(tune, len(labels)))
    return {
        "tolerance": TOLERANCE,
        "max_step_error": step_error,
        "max_fine_tune_error": fine_tune_error,
        "fine_tune_steps": steps,
        "examples": len(labels),
        "optimizers": list(OPTIMIZERS),
    }


def check_settings(hp: HeadHyperparameters) -> list[HeadHyperparameters]:
    """The bundle's own hyper-parameters, then each optimiser at a typical rate."""
    others = [
        replace(hp, optimizer=name, learning_rate=lr, weight_decay=wd, label_smoothing=ls)
        for name, (lr, wd, ls) in CHECK_SETTINGS.items()
    ]
    return [hp, *others]


def edge_batch(
    head: Head, features: np.ndarray, labels: np.ndarray, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """A batch where the constants 1e-8 and 1e-12 matter: a zero feature column, an extreme row.

    The zero column's gradient is exactly 0, so adam / rmsprop divide 0 by (0 + 1e-8); the first row
    is scaled to a logit spread of `EDGE_SPREAD`, so that some p is far below 1e-12 (log(p + 1e-12)).
    """
    x = np.array(features[:rows], dtype=np.float32)
    x[:, 0] = 0.0
    scores = x[:1] @ head.weight.T
    spread = float(scores.max() - scores.min())
    if spread > 1e-6:
        x[0] *= EDGE_SPREAD / spread
    return x, np.asarray(labels[:rows])


def _one_step_error(
    graph: TrainStepGraph, head: Head, x: np.ndarray, y: np.ndarray, hp: HeadHyperparameters
) -> float:
    reference = head.copy()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss = numpy_step(hp, reference)(x, y)
    got, state = graph.step(x, y, StepState.start(head), hp)
    return max(
        _error(np.asarray(got), np.asarray(loss)),
        _error(state.weight, reference.weight),
        _error(state.bias, reference.bias),
    )


def _fine_tune_error(
    graph: TrainStepGraph, head: Head, x: np.ndarray, y: np.ndarray, hp: HeadHyperparameters
) -> float:
    reference, losses = train_head(head, x, y, hp)
    trained, graph_losses = train_head(head, x, y, hp, trainer=graph)
    if len(graph_losses) != len(losses):
        return math.inf
    return max(
        _error(np.asarray(graph_losses), np.asarray(losses)),
        _error(trained.weight, reference.weight),
        _error(trained.bias, reference.bias),
    )


def _fine_tune_setting(hp: HeadHyperparameters, examples: int) -> HeadHyperparameters:
    per_epoch = math.ceil(examples / hp.batch_size)
    return replace(hp, epochs=math.ceil(FINE_TUNE_STEPS / per_epoch))


def _steps(hp: HeadHyperparameters, examples: int) -> int:
    return hp.epochs * math.ceil(examples / hp.batch_size)


def _error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max(1, max |want|); inf when shapes differ or anything is not finite."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        return math.inf
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    return float(np.max(np.abs(got - want))) / scale if want.size else 0.0


def _require(error: float, name: str | Path, what: str) -> None:
    if not error <= TOLERANCE:
        problem = f"differs from the numpy reference by {error:.3g} (> {TOLERANCE:g}) on {what}"
        raise VerificationError(name, f"train-step graph {problem}")


def _describe(hp: HeadHyperparameters) -> str:
    return (
        f"{hp.optimizer} (learning_rate {hp.learning_rate:g}, weight_decay {hp.weight_decay:g}, "
        f"label_smoothing {hp.label_smoothing:g})"
    )


# -- the bundle's graphs and their contract -------------------------------------------------------


def export_train_steps(
    runtimes: Iterable[str],
    staging: Path,
    final: Path,
    head: Head,
    features: np.ndarray,
    labels: np.ndarray,
    hp: HeadHyperparameters,
    stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write, op-check and verify `train_step.<ext>` of each runtime; returns the manifest contract.

    `features` / `labels` (real examples' features, not stored) drive the checks; the TFLite graph's
    fixed batch is `hp.batch_size`. Failures raise ExportError / VerificationError naming the file
    as it will be in the bundle `final`.
    """
    num_classes, feature_dim = head.weight.shape
    graphs: dict[str, Any] = {}
    for runtime in dict.fromkeys(runtimes):
        file = TRAIN_STEP_FILES[runtime]
        if stage is not None:
            stage(f"train step {runtime}")
        graphs[runtime] = _write_graph(
            runtime, num_classes, feature_dim, hp.batch_size, staging / file, final / file
        )
        spec = GraphSpec.from_contract({"graphs": graphs}, runtime)
        assert spec is not None  # just recorded
        graph = TrainStepGraph(staging / file, spec, num_classes, feature_dim, threads=1)
        graphs[runtime]["verification"] = verify_step_graph(
            graph, head, features, labels, hp, final / file
        )
    return contract(graphs, num_classes, feature_dim)


def _write_graph(
    runtime: str, num_classes: int, feature_dim: int, batch: int, path: Path, name: Path
) -> dict[str, Any]:
    """Convert one runtime's graph to `path`, list its ops (refusing others); its manifest entry."""
    try:
        path.write_bytes(
            converted_graph(runtime, num_classes, feature_dim, batch if runtime == "tflite" else 0)
        )
    except ExportError as err:
        raise ExportError(name, err.problem) from err
    except Exception as err:  # a converter failing on this graph is an export failure of it
        raise ExportError(
            name, f"cannot convert the train-step graph: {one_line(err, 200)}"
        ) from err
    try:
        ops = onnx_ops(path) if runtime == "onnx" else tflite_ops(path)
    except ExportError as err:
        raise ExportError(name, err.problem) from err
    inputs, outputs = load_runner(path, runtime).io()
    entry: dict[str, Any] = {
        "file": path.name,
        "batch": "dynamic" if runtime == "onnx" else batch,
        "inputs": inputs,
        "outputs": outputs,
        "ops": ops,
    }
    if runtime == "onnx":
        entry["opset"] = _onnx_opset(path)
    if runtime == "tflite":
        entry["batch_note"] = (
            f"batch fixed to {batch}: litert-torch cannot lower this graph's broadcasts with a "
            f"dynamic batch; fill a smaller batch with padding rows (label {PADDING_LABEL})"
        )
    return entry


def contract(graphs: dict[str, Any], num_classes: int, feature_dim: int) -> dict[str, Any]:
    """The manifest's `fine_tuning.train_step`: graphs, tensors, optimiser equations in words."""
    return {
        "graphs": graphs,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "labels": (
            f"int32 class ids in [0, {num_classes}); a row labelled outside that range (use "
            f"{PADDING_LABEL}) is padding: it adds nothing to the loss or the gradients and is not "
            "counted in n; a batch needs at least one labelled row"
        ),
        "optimizer": {name: index for index, name in enumerate(OPTIMIZERS)},
        "state": (
            "m_weight, m_bias, v_weight, v_bias start as zeros and step as 0; feed each output "
            "new_<name> back as the next step's <name>; loss is the batch's mean loss before the step"
        ),
        "hyperparameters": "learning_rate, weight_decay, label_smoothing: float32 scalars",
        "constants": {
            "momentum": MOMENTUM,
            "adam_betas": list(ADAM_BETAS),
            "rmsprop_alpha": RMSPROP_ALPHA,
            "eps": EPS,
            "log_eps": LOG_EPS,
        },
        "equations": list(EQUATIONS),
        "reference": "autohas_edge.device_sdk.finetune (numpy): train_head, loss_and_grads, _Optimizer",
    }


# -- what a fine-tune personalises ------------------------------------------------------------------


def input_statistics(model: torch.nn.Module) -> dict[str, Any] | None:
    """The training data's per-channel mean and std (the model's normalisation buffers), or None.

    The manifest's `fine_tuning.input_statistics`: the SDK's input alignment
    (`finetune.InputAlignment`) maps a user's examples onto them. None for a model without the
    buffers (then the bundle personalises the head only).
    """
    mean, std = getattr(model, "norm_mean", None), getattr(model, "norm_std", None)
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
        return None
    return {
        "mean": [float(v) for v in mean.detach().flatten()],
        "std": [float(v) for v in std.detach().flatten()],
        "axis": "per channel (axis 1 of [n, C, ...]; per feature for tabular [n, F])",
        "alignment": (
            "x_aligned = x * scale + shift per channel, scale = std / s_user, "
            "shift = mean - m_user * scale, m_user / s_user: the mean / std of the user's training "
            "examples over every axis but the channel (scale 1 where s_user < 1e-3 std)"
        ),
    }


def fine_tuning_hyperparameters(
    hyperparameters: dict[str, Any], statistics: dict[str, Any] | None
) -> dict[str, Any]:
    """The manifest's `fine_tuning.hyperparameters`: the search's, plus what trains by default.

    `trainable` is `DEFAULT_TRAINABLE` ("input+head") when the bundle carries the input statistics,
    else "head".
    """
    return {**hyperparameters, "trainable": DEFAULT_TRAINABLE if statistics else "head"}

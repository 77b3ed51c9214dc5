"""Export one torch model (docs/architecture.md §4) to a verified bundle (§5)."""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from autohas_edge.common.filetable import file_entry, files_table, table_to_json
from autohas_edge.device_sdk.finetune import Head as FineTuneHead
from autohas_edge.device_sdk.finetune import HeadHyperparameters
from autohas_edge.export.contract import ModelSpec, check_contract, torch_outputs
from autohas_edge.export.errors import VerificationError
from autohas_edge.export.fold import fold_batch_norm
from autohas_edge.export.formats import FORMATS, OUTPUT_NAMES, ROLES, Format, parse_formats
from autohas_edge.export.manifest import (
    HEAD_FILE,
    REFERENCE_FILE,
    SCHEMA_VERSION,
    tool_versions,
    write_manifest,
)
from autohas_edge.export.runtimes import load_runner
from autohas_edge.export.train_step import (
    export_train_steps,
    fine_tuning_hyperparameters,
    input_statistics,
)
from autohas_edge.export.verify import (
    FLOAT_TOLERANCE,
    INT8_MAX_ACCURACY_DROP,
    Head,
    Reference,
    accuracy,
    check_float,
    measure,
    predict_logits,
)

#: reference inputs stored in reference.npz
REFERENCE_COUNT = 32
#: where reference inputs come from: real test examples, or synthetic inputs that carry no one's data
#: (the server's choice: every device of an app downloads the bundle, so it must not hold user examples)
REFERENCE_SOURCES = {
    "test": "first examples of the test split",
    "synthetic": "random inputs drawn through the model's own input normalisation, independent of "
    "the data (no real example, no statistic of it)",
}
#: seeds the synthetic reference inputs (not 0: data made with seed 0 would share their rows)
REFERENCE_SEED = 0x5EED_4EF5
#: training examples used to calibrate int8 activations (global min/max). 512 left the demo's int8
#: TFLite model 0.4-1.04 points below float over five random subsets (the gate is 1 point); 1024
#: gave -0.4 to +0.8 (mean 0.1) on the same model
CALIBRATION_COUNT = 1024


def _train_step_rows(batch_size: int) -> int:
    """Test examples whose features check the train-step graphs: 2.5 batches (a padded last one)."""
    return max(1, 2 * batch_size + batch_size // 2)


@dataclass
class ExportReport:
    """What `export_model` / `export_run` produced: the bundle and its verification results."""

    name: str
    bundle: Path
    formats: tuple[str, ...]
    files: list[str]
    float_test_accuracy: float
    int8_test_accuracy: dict[str, float] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "bundle": str(self.bundle)}


@dataclass
class _Context:
    """Everything the per-format steps share while one bundle is being built."""

    model: torch.nn.Module
    spec: ModelSpec
    staging: Path
    final: Path
    reference: Reference
    head: Head
    calibration_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    float_accuracy: float
    reference_source: str = "test"
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage: Callable[[str], None] = lambda _: None
    folded: int = 0
    train_step: dict[str, Any] = field(default_factory=dict)


class _WithFeatures(Protocol):
    def features(self, x: torch.Tensor) -> torch.Tensor: ...


class _FeatureExtractor(torch.nn.Module):
    """`model.features` as a module of its own, for the features.* artifacts."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # check_contract made sure the model has features(x); nn.Module types attributes as Tensor | Module
        return cast(_WithFeatures, self.model).features(x)


def export_model(
    model: torch.nn.Module,
    result: dict[str, Any],
    out_dir: str | Path,
    formats: str | Iterable[str | Format],
    calibration_x: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    name: str = "model",
    source: str = "model",
    result_source: str = "result.json",
    on_stage: Callable[[str], None] | None = None,
    reference: str = "test",
) -> ExportReport:
    """Convert, verify and write the bundle `out_dir/name`; a failed check raises VerificationError.

    `reference` picks the inputs stored in reference.npz: "test" (real test examples) or "synthetic"
    (random inputs shaped like the data, for bundles that must not carry anyone's examples).
    """
    start = time.perf_counter()
    fmts = parse_formats(formats)
    if reference not in REFERENCE_SOURCES:
        raise ValueError(f"reference must be one of {sorted(REFERENCE_SOURCES)}, not {reference!r}")
    stage = on_stage or _no_stage
    stage("check")
    spec = check_contract(model.eval(), result, test_x, source, result_source)
    final = Path(out_dir) / name
    staging = Path(out_dir) / f".{name}.partial"  # renamed to `final` only once everything verified
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        stage("reference")
        x_ref = reference_inputs(reference, calibration_x, test_x, model)
        ctx = _prepare(model, spec, staging, final, x_ref, calibration_x, test_x, test_y)
        ctx.reference_source = reference
        ctx.stage = stage
        _write_artifacts(ctx, result, fmts)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    int8 = {f: r["test_accuracy"] for f, r in ctx.records.items() if "test_accuracy" in r}
    files = sorted(p.name for p in final.iterdir())
    seconds = time.perf_counter() - start
    return ExportReport(name, final, tuple(f.name for f in fmts), files, ctx.float_accuracy, int8,
                        _verification(ctx), seconds)  # fmt: skip


def _write_artifacts(ctx: _Context, result: dict[str, Any], fmts: tuple[Format, ...]) -> None:
    """Every requested artifact, verified, then the manifest, into the staging folder."""
    ctx.model, ctx.folded = fold_batch_norm(
        ctx.model
    )  # convert the folded copy, verify against the original
    with tempfile.TemporaryDirectory() as scratch:
        for runtime in ("onnx", "tflite"):
            _export_runtime(ctx, runtime, fmts, Path(scratch))
    ctx.train_step = _train_steps(ctx, fmts)
    ctx.stage("manifest")
    write_manifest(ctx.staging, _manifest(ctx, result, ctx.final.name, fmts))


def _train_steps(ctx: _Context, fmts: tuple[Format, ...]) -> dict[str, Any]:
    """The head's train-step graph for each runtime of `fmts`, verified on test examples' features."""
    hp = HeadHyperparameters.from_mapping(ctx.spec.fine_tuning)
    rows = min(len(ctx.test_y), _train_step_rows(hp.batch_size))
    _, features = torch_outputs(ctx.model, ctx.test_x[:rows])
    head = FineTuneHead(ctx.head.weight.copy(), ctx.head.bias.copy())
    runtimes = [f.runtime for f in fmts]
    return export_train_steps(
        runtimes, ctx.staging, ctx.final, head, features, ctx.test_y[:rows], hp, ctx.stage
    )


def _no_stage(_: str) -> None:
    return None


def reference_inputs(
    source: str,
    calibration_x: np.ndarray,
    test_x: np.ndarray,
    model: torch.nn.Module | None = None,
) -> np.ndarray:
    """The reference inputs for `source` ("test" or "synthetic"), float32 and contiguous.

    "synthetic" inputs depend on nothing but the data's shape and the model: seeded standard normal
    noise mapped through the model's own input normalisation (`norm_mean + z * norm_std`, buffers
    every artifact already carries), or left standard normal for a model without them. So they
    reveal nothing the model does not, unlike statistics of the calibration rows (a constant feature
    was copied into them exactly).
    """
    if source == "test":
        return np.ascontiguousarray(test_x[:REFERENCE_COUNT], dtype=np.float32)
    shape = np.asarray(calibration_x).shape[1:]
    z = np.random.default_rng(REFERENCE_SEED).standard_normal((REFERENCE_COUNT, *shape))
    mean, std = _input_norm(model)
    return np.ascontiguousarray(mean + z * std, dtype=np.float32)


def _input_norm(model: torch.nn.Module | None) -> tuple[np.ndarray, np.ndarray]:
    """The model's input normalisation buffers as numpy (0 and 1 when it has none)."""
    mean, std = getattr(model, "norm_mean", None), getattr(model, "norm_std", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        return np.zeros(()), np.ones(())
    return mean.detach().cpu().double().numpy(), std.detach().cpu().double().numpy()


def _prepare(
    model: torch.nn.Module,
    spec: ModelSpec,
    staging: Path,
    final: Path,
    x_ref: np.ndarray,
    calibration_x: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> _Context:
    """Write head.npz and reference.npz; measure the torch model's test accuracy."""
    logits, features = torch_outputs(model, x_ref)
    np.savez(staging / REFERENCE_FILE, x=x_ref, logits=logits, features=features)
    classifier = model.classifier
    assert isinstance(classifier, torch.nn.Linear)  # check_contract made sure
    weight = classifier.weight.detach().cpu().numpy().astype(np.float32)
    bias = classifier.bias.detach().cpu().numpy().astype(np.float32)
    np.savez(staging / HEAD_FILE, weight=weight, bias=bias)
    test_logits, _ = torch_outputs(model, test_x)
    return _Context(
        model,
        spec,
        staging,
        final,
        Reference(x_ref, logits, features),
        Head(weight, bias),
        np.asarray(calibration_x, dtype=np.float32),
        np.asarray(test_x, dtype=np.float32),
        np.asarray(test_y),
        accuracy(test_logits, np.asarray(test_y)),
    )


def _export_runtime(ctx: _Context, runtime: str, fmts: tuple[Format, ...], scratch: Path) -> None:
    """The float and/or int8 artifacts of one runtime, both roles; the float file is kept only if asked."""
    float_fmt, int8_fmt = FORMATS[runtime], FORMATS[f"{runtime}-int8"]
    if float_fmt not in fmts and int8_fmt not in fmts:
        return
    note = ""  # why the TFLite batch is fixed; found on the full model, reused for its feature extractor
    for role in ROLES:
        module = ctx.model if role == "model" else _FeatureExtractor(ctx.model).eval()
        float_path = (ctx.staging if float_fmt in fmts else scratch) / float_fmt.file(role)
        ctx.stage(f"{float_fmt.name} {role}")
        note = _convert(runtime, module, ctx.reference.x, float_path, OUTPUT_NAMES[role], note)
        if float_fmt in fmts:
            _verify_float(ctx, float_fmt, role, float_path)
            _record_artifact(ctx, float_fmt, role, float_path, note)
        if int8_fmt in fmts:
            int8_path = ctx.staging / int8_fmt.file(role)
            ctx.stage(f"{int8_fmt.name} {role}")
            _quantize(runtime, float_path, int8_path, ctx.calibration_x)
            _verify_int8(ctx, int8_fmt, role, int8_path)
            _record_artifact(ctx, int8_fmt, role, int8_path, note)


def _convert(
    runtime: str,
    module: torch.nn.Module,
    x_ref: np.ndarray,
    path: Path,
    output_name: str,
    fixed_reason: str,
) -> str:
    """Write the float artifact; returns why its batch is fixed ("" when dynamic)."""
    sample = torch.from_numpy(x_ref[:2].copy())
    with torch.no_grad():
        if runtime == "onnx":
            from autohas_edge.export.convert_onnx import export_onnx

            export_onnx(module, sample, path, output_name)
            return ""
        from autohas_edge.export.convert_tflite import export_tflite

        return export_tflite(module, sample, path, output_name, fixed_reason).note


def _quantize(runtime: str, float_path: Path, path: Path, calibration_x: np.ndarray) -> None:
    if runtime == "onnx":
        from autohas_edge.export.convert_onnx import quantize_onnx

        quantize_onnx(float_path, path, calibration_x)
    else:
        from autohas_edge.export.convert_tflite import quantize_tflite

        quantize_tflite(float_path, path, calibration_x)


def _verify_float(ctx: _Context, fmt: Format, role: str, path: Path) -> None:
    """Float artifact vs torch on the reference inputs: max abs diff and argmax; raises on failure."""
    outputs = load_runner(path, fmt.runtime).run(ctx.reference.x)
    check = check_float(ctx.final / path.name, fmt.name, role, outputs, ctx.reference, ctx.head)
    ctx.records[path.name] = {**_record(check.to_json()), "tolerance": FLOAT_TOLERANCE}
    if not check.passed:
        raise VerificationError(ctx.final / path.name, check.problem.split(": ", 1)[1])


def _verify_int8(ctx: _Context, fmt: Format, role: str, path: Path) -> None:
    """int8 artifact: test accuracy against the float model's (<= 1 point drop); raises on failure."""
    runner = load_runner(path, fmt.runtime)
    diff, agreement = measure(runner.run(ctx.reference.x), role, ctx.reference, ctx.head)
    test_accuracy = accuracy(predict_logits(runner.run(ctx.test_x), role, ctx.head), ctx.test_y)
    drop = ctx.float_accuracy - test_accuracy
    passed = drop <= INT8_MAX_ACCURACY_DROP + 1e-9
    ctx.records[path.name] = {
        "file": path.name,
        "format": fmt.name,
        "role": role,
        "passed": passed,
        "max_abs_diff": diff,
        "reference_agreement": agreement,
        "test_accuracy": test_accuracy,
        "float_test_accuracy": ctx.float_accuracy,
        "accuracy_drop": drop,
    }
    if not passed:
        problem = (
            f"int8 test accuracy {test_accuracy:.2%} is {drop * 100:.2f} points below float "
            f"{ctx.float_accuracy:.2%} (at most {INT8_MAX_ACCURACY_DROP * 100:g} allowed)"
        )
        raise VerificationError(ctx.final / path.name, problem)


def _record(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k not in ("problem", "skipped")}


def _record_artifact(ctx: _Context, fmt: Format, role: str, path: Path, note: str) -> None:
    runner = load_runner(path, fmt.runtime)
    inputs, outputs = runner.io()
    runner_batch = runner.batch
    entry: dict[str, Any] = {
        "format": fmt.name,
        "role": role,
        "file": path.name,
        **file_entry(path).to_json(),
        "batch": runner_batch,
        "inputs": inputs,
        "outputs": outputs,
    }
    if note and runner_batch != "dynamic":
        entry["batch_note"] = note
    if fmt.int8:
        entry["quantization"] = _quantization(fmt, len(ctx.calibration_x))
    ctx.artifacts.append(entry)


def _quantization(fmt: Format, calibration_count: int) -> dict[str, Any]:
    tool = (
        "onnxruntime.quantization (QDQ)"
        if fmt.runtime == "onnx"
        else "ai-edge-quantizer (static_wi8_ai8)"
    )
    return {
        "scheme": "static",
        "weights": "int8 per-channel",
        "activations": "int8",
        "io": "float32",
        "calibration": f"{calibration_count} training examples",
        "tool": tool,
    }


def _artifact_order(artifact: dict[str, Any]) -> tuple[int, int]:
    return list(FORMATS).index(artifact["format"]), ROLES.index(artifact["role"])


def _verification(ctx: _Context) -> dict[str, Any]:
    return {
        "passed": all(r["passed"] for r in ctx.records.values()),
        "float_tolerance": FLOAT_TOLERANCE,
        "int8_max_accuracy_drop": INT8_MAX_ACCURACY_DROP,
        "float_test_accuracy": ctx.float_accuracy,
        "test_examples": len(ctx.test_x),
        "artifacts": ctx.records,
    }


def _manifest(
    ctx: _Context, result: dict[str, Any], name: str, fmts: tuple[Format, ...]
) -> dict[str, Any]:
    """manifest.json as docs/architecture.md §5 describes it."""
    spec = ctx.spec
    statistics = input_statistics(ctx.model)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "formats": [f.name for f in fmts],
        "input": {"name": "x", "shape": ["batch", *spec.input_shape], "dtype": "float32"},
        "outputs": {
            role: {"name": OUTPUT_NAMES[role], "shape": ["batch", dim], "dtype": "float32"}
            for role, dim in (("model", spec.num_classes), ("features", spec.feature_dim))
        },
        "label_names": spec.label_names,
        "preprocessing": {
            "normalization": "inside the model",
            "input": "raw float32, channels first",
            "steps": [],
        },
        "architecture": result.get("architecture"),
        "hyperparameters": result.get("hyperparameters"),
        "search_metrics": {
            k: result.get(k)
            for k in (
                "test_accuracy",
                "params",
                "search_seconds",
                "retrain_seconds",
                "retrain_steps",
            )
        },
        "dataset": result.get("dataset"),
        "fine_tuning": {
            "head_file": HEAD_FILE,
            "feature_dim": spec.feature_dim,
            "num_classes": spec.num_classes,
            "hyperparameters": fine_tuning_hyperparameters(spec.fine_tuning, statistics),
            "train_step": ctx.train_step,
            "input_statistics": statistics,
        },
        "conversion": {"batch_norm_folded": ctx.folded},
        "reference": {
            "file": REFERENCE_FILE,
            "count": len(ctx.reference.x),
            "source": REFERENCE_SOURCES[ctx.reference_source],
            "keys": ["x", "logits", "features"],
        },
        "artifacts": sorted(ctx.artifacts, key=_artifact_order),
        "files": table_to_json(files_table(ctx.staging)),
        "tool_versions": tool_versions(),
        "verification": _verification(ctx),
    }

"""The head's train-step graphs in an exported bundle: contract, op lists, raw runtime runs, refusals."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import numpy_helper

from autohas_edge.common.fs import sha256_file
from autohas_edge.device_sdk.errors import BundleError
from autohas_edge.device_sdk.finetune import Head, HeadHyperparameters, numpy_step
from autohas_edge.device_sdk.train_graph import (
    INPUTS,
    OUTPUTS,
    GraphSpec,
    StepState,
    TrainStepGraph,
)
from autohas_edge.export.errors import ExportError, VerificationError
from autohas_edge.export.runtimes import tflite_interpreter_class
from autohas_edge.export.train_step import (
    FINE_TUNE_STEPS,
    TOLERANCE,
    onnx_ops,
    tflite_ops,
    verify_step_graph,
)
from tests.export.helpers import manifest_of

RUNTIMES = ("onnx", "tflite")


def _contract(bundle: Path) -> dict:
    return manifest_of(bundle)["fine_tuning"]["train_step"]


def _head(bundle: Path) -> Head:
    with np.load(bundle / "head.npz") as data:
        return Head(data["weight"], data["bias"])


def _data(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference inputs' features (real model outputs) and random labels."""
    with np.load(bundle / "reference.npz") as data:
        features = data["features"]
    labels = np.random.default_rng(0).integers(0, _head(bundle).weight.shape[0], len(features))
    return features, labels


def _hp(bundle: Path) -> HeadHyperparameters:
    return HeadHyperparameters.from_mapping(manifest_of(bundle)["fine_tuning"]["hyperparameters"])


def _graph(bundle: Path, runtime: str, path: Path | None = None) -> TrainStepGraph:
    spec = GraphSpec.from_contract(_contract(bundle), runtime)
    assert spec is not None
    c, d = _head(bundle).weight.shape
    return TrainStepGraph(path or bundle / spec.file, spec, c, d, threads=1)


def test_every_bundle_carries_both_graphs_and_their_contract(tiny_bundle: Path) -> None:
    manifest, contract = manifest_of(tiny_bundle), _contract(tiny_bundle)
    c, d = _head(tiny_bundle).weight.shape
    batch = _hp(tiny_bundle).batch_size
    assert (contract["num_classes"], contract["feature_dim"]) == (c, d)
    assert contract["inputs"] == list(INPUTS) and contract["outputs"] == list(OUTPUTS)
    assert contract["optimizer"] == {"sgd": 0, "adam": 1, "rmsprop": 2}
    assert any("adam" in line and "1e-8" in line for line in contract["equations"])
    for runtime, rows in (("onnx", "batch"), ("tflite", batch)):
        graph = contract["graphs"][runtime]
        file = graph["file"]
        assert file == f"train_step.{runtime}" and (tiny_bundle / file).is_file()
        assert manifest["files"][file]["sha256"] == sha256_file(tiny_bundle / file)
        assert graph["batch"] == ("dynamic" if runtime == "onnx" else batch)
        assert (
            runtime != "onnx"
            or graph["opset"] == onnx.load(str(tiny_bundle / file)).opset_import[0].version
        )
        specs = {s["name"]: (s["shape"], s["dtype"]) for s in graph["inputs"]}
        assert specs["features"] == ([rows, d], "float32")
        assert specs["labels"] == ([rows], "int32")
        assert specs["weight"] == ([c, d], "float32") and specs["v_bias"] == ([c], "float32")
        assert specs["step"] == ([], "int32") and specs["optimizer"] == ([], "int32")
        assert specs["learning_rate"] == ([], "float32")
        outputs = {s["name"]: (s["shape"], s["dtype"]) for s in graph["outputs"]}
        assert set(outputs) == set(OUTPUTS) and outputs["loss"] == ([], "float32")
        check = graph["verification"]
        assert check["tolerance"] == TOLERANCE and check["fine_tune_steps"] >= FINE_TUNE_STEPS
        assert check["max_step_error"] <= TOLERANCE and check["max_fine_tune_error"] <= TOLERANCE


def test_onnx_graph_uses_default_domain_ops_only(tiny_bundle: Path) -> None:
    path = tiny_bundle / "train_step.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"} and not model.functions
    assert {i.domain for i in model.opset_import} <= {"", "ai.onnx"}
    ops = onnx_ops(path)
    assert ops == _contract(tiny_bundle)["graphs"]["onnx"]["ops"]
    assert {"ai.onnx::MatMul", "ai.onnx::Where", "ai.onnx::Tanh"} <= set(ops)


def test_tflite_graph_uses_builtin_ops_only(tiny_bundle: Path) -> None:
    path = tiny_bundle / "train_step.tflite"
    ops = tflite_ops(path)
    assert ops == _contract(tiny_bundle)["graphs"]["tflite"]["ops"]
    assert not any(op.startswith(("CUSTOM", "Flex")) for op in ops)
    # the interpreter's own (private) op listing agrees with the flatbuffer's operator codes
    interpreter = tflite_interpreter_class()(model_path=str(path))
    assert sorted({op["op_name"] for op in interpreter._get_ops_details()}) == ops


def _feeds(head: Head, x: np.ndarray, y: np.ndarray, optimizer: int) -> dict[str, np.ndarray]:
    zeros_w, zeros_b = np.zeros_like(head.weight), np.zeros_like(head.bias)
    return {
        "features": x.astype(np.float32),
        "labels": y.astype(np.int32),
        "weight": head.weight,
        "bias": head.bias,
        "m_weight": zeros_w,
        "m_bias": zeros_b,
        "v_weight": zeros_w,
        "v_bias": zeros_b,
        "step": np.array(0, np.int32),
        "learning_rate": np.array(0.01, np.float32),
        "weight_decay": np.array(0.001, np.float32),
        "label_smoothing": np.array(0.1, np.float32),
        "optimizer": np.array(optimizer, np.int32),
    }


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_stock_runtime_runs_one_step_like_numpy(tiny_bundle: Path, runtime: str) -> None:
    """The contract alone (no SDK code): padded rows for TFLite's fixed batch, labelled -1."""
    head, (x, y) = _head(tiny_bundle), _data(tiny_bundle)
    n = 5
    reference = head.copy()
    hp = HeadHyperparameters(learning_rate=0.01, weight_decay=0.001, label_smoothing=0.1)
    loss = numpy_step(replace(hp, optimizer="adam"), reference)(x[:n], y[:n])
    if runtime == "onnx":
        session = ort.InferenceSession(str(tiny_bundle / "train_step.onnx"))
        names = [o.name for o in session.get_outputs()]
        out = dict(zip(names, session.run(names, _feeds(head, x[:n], y[:n], 1)), strict=True))
    else:
        rows = _hp(tiny_bundle).batch_size
        xp = np.concatenate([x[:n], np.zeros((rows - n, x.shape[1]), np.float32)])
        yp = np.concatenate([y[:n], np.full(rows - n, -1)])
        interpreter = tflite_interpreter_class()(model_path=str(tiny_bundle / "train_step.tflite"))
        out = interpreter.get_signature_runner()(**_feeds(head, xp, yp, 1))
    assert abs(float(out["loss"]) - loss) <= TOLERANCE * max(1.0, abs(loss))
    np.testing.assert_allclose(out["new_weight"], reference.weight, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(out["new_bias"], reference.bias, rtol=0, atol=TOLERANCE)
    assert int(out["new_step"]) == 1


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_export_verification_passes_on_the_bundles_graphs(tiny_bundle: Path, runtime: str) -> None:
    x, y = _data(tiny_bundle)
    graph = _graph(tiny_bundle, runtime)
    record = verify_step_graph(graph, _head(tiny_bundle), x, y, _hp(tiny_bundle), graph.path)
    assert record["max_fine_tune_error"] <= TOLERANCE and record["fine_tune_steps"] >= 30


def _tamper_onnx(source: Path, target: Path, old: float, new: float) -> None:
    """Replace every float constant equal to `old` by `new` (what a mistranslating exporter does)."""
    model = onnx.load(str(source))
    changed = 0
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                value = numpy_helper.to_array(attribute.t)
                if value.dtype == np.float32 and value.size == 1 and np.isclose(value, old, 0, 0):
                    attribute.t.CopyFrom(numpy_helper.from_array(value * 0 + new, attribute.t.name))
                    changed += 1
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.float32 and value.size == 1 and np.isclose(value, old, 0, 0):
            init.CopyFrom(numpy_helper.from_array(value * 0 + new, init.name))
            changed += 1
    assert changed, f"no constant {old} in {source.name}"
    onnx.save(model, str(target))


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (0.9, 0.8, "a wrong momentum"),
        (1e-8, 0.0, "adam / rmsprop without eps (what onnxscript's optimizer does)"),
        (1e-12, 0.0, "the loss's log(p + 1e-12) without 1e-12"),
    ],
)
def test_a_graph_that_differs_from_numpy_fails_naming_it(
    tiny_bundle: Path, tmp_path: Path, old: float, new: float, why: str
) -> None:
    bad = tmp_path / "train_step.onnx"
    _tamper_onnx(tiny_bundle / "train_step.onnx", bad, np.float32(old), new)
    x, y = _data(tiny_bundle)
    graph = _graph(tiny_bundle, "onnx", bad)
    with pytest.raises(VerificationError, match=r"train_step\.onnx: train-step graph differs from"):
        verify_step_graph(graph, _head(tiny_bundle), x, y, _hp(tiny_bundle), bad)


def test_ops_outside_the_default_domain_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_bundle / "train_step.onnx"))
    model.graph.node[0].domain = "com.microsoft"
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "train_step.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match=r"train_step\.onnx: .*outside the default ONNX domain"):
        onnx_ops(path)


def test_custom_and_flex_tflite_ops_are_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    model = schema.ModelT.InitFromPackedBuf((tiny_bundle / "train_step.tflite").read_bytes(), 0)
    code = model.operatorCodes[0]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "FlexAddV2"
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "train_step.tflite"
    path.write_bytes(bytes(builder.Output()))
    with pytest.raises(ExportError, match=r"non-builtin .*CUSTOM:FlexAddV2"):
        tflite_ops(path)


def test_a_graph_that_is_not_a_train_step_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "train_step.onnx"
    shutil.copyfile(tiny_bundle / "features.onnx", path)
    x, y = _data(tiny_bundle)
    start = StepState.start(_head(tiny_bundle))
    with pytest.raises(BundleError, match="not a train-step graph: it has no input 'features'"):
        _graph(tiny_bundle, "onnx", path).step(x[:4], y[:4], start, _hp(tiny_bundle))

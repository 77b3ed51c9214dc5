"""Round trip of every format on a real searched model: real export, real runtimes, real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from autohas_edge.common.fs import sha256_file
from autohas_edge.export.formats import FORMATS, ROLES
from autohas_edge.export.runtimes import load_runner, tflite_interpreter_class
from autohas_edge.export.verify import FLOAT_TOLERANCE, load_head, load_reference
from tests.export.helpers import manifest_of

ARTIFACTS = [(fmt, role) for fmt in FORMATS.values() for role in ROLES]


def _entry(manifest: dict, file: str) -> dict:
    return next(a for a in manifest["artifacts"] if a["file"] == file)


def test_bundle_holds_every_artifact_head_and_reference(tiny_bundle: Path) -> None:
    names = {p.name for p in tiny_bundle.iterdir()}
    expected = {fmt.file(role) for fmt, role in ARTIFACTS} | {
        "head.npz",
        "reference.npz",
        "manifest.json",
        "signature.json",  # the fixture signs the bundle (export/signing.py)
        "train_step.onnx",
        "train_step.tflite",
    }
    assert names == expected


@pytest.mark.parametrize(("fmt", "role"), ARTIFACTS, ids=[f.file(r) for f, r in ARTIFACTS])
def test_artifact_reproduces_torch_in_its_runtime(tiny_bundle: Path, fmt, role: str) -> None:
    manifest, reference = manifest_of(tiny_bundle), load_reference(tiny_bundle / "reference.npz")
    entry = _entry(manifest, fmt.file(role))
    assert (entry["format"], entry["role"]) == (fmt.name, role)
    assert entry["inputs"][0]["name"] == "x" and entry["inputs"][0]["dtype"] == "float32"
    assert entry["outputs"][0]["name"] == ("logits" if role == "model" else "features")
    outputs = load_runner(tiny_bundle / entry["file"], fmt.runtime).run(reference.x)
    expected = reference.logits if role == "model" else reference.features
    assert outputs.shape == expected.shape and outputs.dtype == np.float32
    head = load_head(tiny_bundle / "head.npz")
    logits = head.logits(outputs) if role == "features" else outputs
    agreement = np.mean(logits.argmax(1) == reference.logits.argmax(1))
    record = manifest["verification"]["artifacts"][entry["file"]]
    if fmt.int8:
        assert record["accuracy_drop"] <= 0.01 and record["passed"]
        assert agreement >= record["reference_agreement"] - 1 / len(reference.x)
        assert np.abs(outputs - expected).max() < 1.0  # quantized, not garbage
    else:
        assert np.abs(outputs - expected).max() <= FLOAT_TOLERANCE
        assert agreement == 1.0


def test_manifest_follows_the_contract(tiny_bundle: Path, tiny_run: Path) -> None:
    manifest = manifest_of(tiny_bundle)
    result = json.loads((tiny_run / "result.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["name"] == tiny_run.name
    assert manifest["input"]["shape"] == ["batch", *result["dataset"]["input_shape"]]
    assert manifest["label_names"] == result["dataset"]["label_names"]
    assert manifest["architecture"] == result["architecture"]
    assert manifest["hyperparameters"] == result["hyperparameters"]
    assert manifest["search_metrics"]["test_accuracy"] == result["test_accuracy"]
    fine = manifest["fine_tuning"]
    assert (
        fine["head_file"] == "head.npz" and fine["num_classes"] == result["dataset"]["num_classes"]
    )
    # the search's, plus what trains by default (the bundle has the training data's statistics)
    assert fine["hyperparameters"] == {**result["fine_tuning"], "trainable": "input+head"}
    assert {"torch", "onnx", "onnxruntime", "litert-torch", "ai-edge-quantizer"} <= set(
        manifest["tool_versions"]
    )
    assert manifest["verification"]["passed"] is True
    assert manifest["reference"]["file"] == "reference.npz"
    assert manifest["conversion"]["batch_norm_folded"] > 0


def test_manifest_hashes_match_the_files(tiny_bundle: Path) -> None:
    manifest = manifest_of(tiny_bundle)
    unlisted = {
        "manifest.json",
        "signature.json",
    }  # the signature lists the manifest, not vice versa
    assert set(manifest["files"]) == {p.name for p in tiny_bundle.iterdir()} - unlisted
    for name, entry in manifest["files"].items():
        assert entry == {
            "sha256": sha256_file(tiny_bundle / name),
            "bytes": (tiny_bundle / name).stat().st_size,
        }
    for artifact in manifest["artifacts"]:
        assert manifest["files"][artifact["file"]]["sha256"] == artifact["sha256"]


@pytest.mark.parametrize("file", ["model.onnx", "features.onnx", "model_int8.onnx"])
def test_onnx_is_one_self_contained_file_with_a_dynamic_batch(tiny_bundle: Path, file: str) -> None:
    model = onnx.load(str(tiny_bundle / file), load_external_data=False)
    onnx.checker.check_model(model)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert _entry(manifest_of(tiny_bundle), file)["batch"] == "dynamic"
    runner = load_runner(tiny_bundle / file, "onnx")
    x = load_reference(tiny_bundle / "reference.npz").x
    for n in (1, 3, len(x)):
        assert runner.session.run(None, {"x": x[:n]})[0].shape[0] == n


def test_tflite_batch_is_recorded_and_explained(tiny_bundle: Path) -> None:
    for artifact in manifest_of(tiny_bundle)["artifacts"]:
        if artifact["format"].startswith("tflite"):
            runner = load_runner(tiny_bundle / artifact["file"], "tflite")
            assert artifact["batch"] == runner.batch
            if artifact["batch"] != "dynamic":
                assert artifact["batch"] == 1 and artifact["inputs"][0]["shape"][0] == 1
                assert "batch fixed to 1" in artifact["batch_note"]


def test_int8_artifacts_really_are_int8(tiny_bundle: Path) -> None:
    ops = {n.op_type for n in onnx.load(str(tiny_bundle / "model_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    interpreter = tflite_interpreter_class()(model_path=str(tiny_bundle / "model_int8.tflite"))
    assert any(np.dtype(t["dtype"]) == np.int8 for t in interpreter.get_tensor_details())


def test_head_applied_to_reference_features_gives_reference_logits(tiny_bundle: Path) -> None:
    reference, head = (
        load_reference(tiny_bundle / "reference.npz"),
        load_head(tiny_bundle / "head.npz"),
    )
    fine = manifest_of(tiny_bundle)["fine_tuning"]
    assert (
        head.weight.shape == (fine["num_classes"], fine["feature_dim"])
        and head.weight.dtype == np.float32
    )
    np.testing.assert_allclose(head.logits(reference.features), reference.logits, atol=1e-5)

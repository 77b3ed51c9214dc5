"""Bundle parsing and verification on a real exported bundle, including tampered copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.device_sdk import (
    BundleError,
    BundleVerificationError,
    Hub,
    Manifest,
    verify_bundle,
)
from autohas_edge.device_sdk.bundle import load_head
from tests.device_sdk.helpers import TASK
from tests.fixtures.bundle_edits import rehash


def test_manifest_reads_the_exported_bundle(bundle_dir: Path, manifest_json: dict) -> None:
    manifest = Manifest.load(bundle_dir)
    assert "onnx" in manifest.formats() and "tflite" in manifest.formats()
    assert manifest.input_shape == tuple(manifest_json["input"]["shape"][1:])
    assert (
        len(manifest.label_names)
        == manifest.num_classes
        == manifest_json["fine_tuning"]["num_classes"]
    )
    weight, bias = load_head(bundle_dir, manifest)
    assert (
        weight.shape == (manifest.num_classes, manifest.fine_tuning.feature_dim)
        and bias.dtype == np.float32
    )


def test_verify_bundle_checks_every_runnable_format(bundle_dir: Path) -> None:
    report = verify_bundle(bundle_dir)
    assert set(report.formats) == set(Manifest.load(bundle_dir).formats())
    assert set(report.files) == set(Manifest.load(bundle_dir).files)


def test_flipped_byte_in_an_artifact_is_refused_and_the_old_model_stays(
    hub: Hub, bundle_copy: Path, global_data: tuple
) -> None:
    x = global_data[0][:5]
    before = hub.model(TASK, app_id="com.a").predict(x)
    data = bytearray((bundle_copy / "features.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "features.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError, match=r"features\.onnx: sha256 mismatch"):
        hub.install(bundle_copy, TASK, model_id="evil")
    assert hub.installed(TASK) != "evil"
    np.testing.assert_array_equal(hub.model(TASK, app_id="com.a").predict(x), before)
    assert not any((hub.root / "bundles").glob("evil*")) and not any(
        (hub.root / "staging").iterdir()
    )


def test_rehashed_substitution_is_caught_by_reference_outputs(
    bundle_copy: Path, tmp_path: Path
) -> None:
    """An attacker who also rewrites the manifest's hashes still fails the reference-output check
    (on a hub that opted out of signatures: the check under them)."""
    shutil.copyfile(bundle_copy / "model.onnx", bundle_copy / "features.onnx")
    rehash(bundle_copy, "features.onnx")
    with pytest.raises(BundleVerificationError, match=r"features\.onnx"):
        Hub(tmp_path / "hub", allow_unsigned=True).install(bundle_copy, TASK)


def test_rehashed_head_is_caught(bundle_copy: Path, tmp_path: Path) -> None:
    with np.load(bundle_copy / "head.npz") as head:
        np.savez(bundle_copy / "head.npz", weight=head["weight"][::-1].copy(), bias=head["bias"])
    rehash(bundle_copy, "head.npz")
    with pytest.raises(BundleVerificationError, match=r"head\.npz"):
        Hub(tmp_path / "hub", allow_unsigned=True).install(bundle_copy, TASK)


def test_missing_file_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    (bundle_copy / "reference.npz").unlink()
    with pytest.raises(BundleError, match=r"reference\.npz"):
        Hub(tmp_path / "hub").install(bundle_copy, TASK)


def test_paths_outside_the_bundle_are_refused(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    with pytest.raises(BundleError, match="escapes"):
        Manifest.from_json(json.dumps(manifest))


def test_malformed_manifest_names_the_problem() -> None:
    with pytest.raises(BundleError, match="malformed manifest"):
        Manifest.from_json('{"artifacts": []}')


def test_installing_only_one_format_copies_only_its_files(
    hub: Hub, bundle_dir: Path, tmp_path: Path, trusted_key: str
) -> None:
    small = Hub(tmp_path / "small", trusted_keys=[trusted_key])
    small.install(bundle_dir, TASK, formats=["tflite"])
    (installed,) = (small.root / "bundles").iterdir()
    assert not list(installed.glob("*.onnx")) and list(installed.glob("*.tflite"))
    assert small.model(TASK, app_id="com.a").format == "tflite"
    with pytest.raises(BundleError, match="onnx"):
        small.model(TASK, app_id="com.a", format="onnx")

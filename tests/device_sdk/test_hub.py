"""The hub: apps sharing one model or having their own, inference on ONNX and TFLite, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.device_sdk import (
    BundleVerificationError,
    Hub,
    InvalidInputError,
    ModelNotFoundError,
)
from tests.device_sdk.helpers import TASK


def test_two_apps_share_one_model(hub: Hub, skewed_user) -> None:
    keyboard = hub.model(TASK, app_id="com.example.keyboard")
    camera = hub.model(TASK, app_id="com.example.camera")
    user = skewed_user
    assert keyboard.shared and camera.shared and keyboard.model_id == camera.model_id
    assert len(list((hub.root / "bundles").iterdir())) == 1  # stored once
    np.testing.assert_array_equal(keyboard.predict(user.x_eval), camera.predict(user.x_eval))
    result = keyboard.fine_tune(user.x_tune, user.y_tune)
    assert result.accepted
    assert camera.version == keyboard.version == result.version  # one personalisation for both
    np.testing.assert_allclose(
        keyboard.predict(user.x_eval), camera.predict(user.x_eval), atol=1e-6
    )


def test_an_app_can_have_its_own_model(hub: Hub, skewed_user) -> None:
    shared = hub.model(TASK, app_id="com.example.keyboard")
    own = hub.model(TASK, app_id="com.example.health", private=True)
    user = skewed_user
    assert not own.shared and own.model_id == shared.model_id
    assert own.fine_tune(user.x_tune, user.y_tune).accepted
    assert own.version == 1 and shared.version == 0
    assert hub.model(TASK, app_id="com.example.health").version == 1  # remembered for the app
    hub.share(TASK, "com.example.health")
    assert hub.model(TASK, app_id="com.example.health").shared


def test_an_app_can_install_its_own_bundle(hub: Hub, bundle_dir: Path) -> None:
    hub.install(bundle_dir, TASK, app_id="com.example.health", model_id="health-v2")
    assert hub.model(TASK, app_id="com.example.health").model_id == "health-v2"
    assert hub.model(TASK, app_id="com.example.keyboard").model_id != "health-v2"


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_predict_and_embed_single_and_batch(
    hub: Hub, global_data: tuple, reference: dict, fmt: str
) -> None:
    x = global_data[0]
    model = hub.model(TASK, app_id="com.a", format=fmt)
    probs = model.predict(x[:64])
    assert model.format == fmt and probs.shape == (64, model.num_classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        model.predict(x[7]), probs[7], atol=1e-5
    )  # one example: no batch axis
    features = model.embed(x[:5])
    assert features.shape == (5, model.manifest.fine_tuning.feature_dim)
    assert model.embed(x[0]).shape == (model.manifest.fine_tuning.feature_dim,)
    np.testing.assert_allclose(
        model.logits(reference["x"]), reference["logits"], atol=1e-3
    )  # = torch


def test_onnx_and_tflite_agree(hub: Hub, global_data: tuple) -> None:
    x = global_data[0][:50]
    onnx = hub.model(TASK, app_id="com.a", format="onnx").predict(x)
    tflite = hub.model(TASK, app_id="com.a", format="tflite").predict(x)
    np.testing.assert_allclose(onnx, tflite, atol=1e-4)


def test_batch_one_tflite_artifacts_are_looped(hub: Hub, global_data: tuple) -> None:
    model = hub.model(TASK, app_id="com.a", format="tflite")
    artifact = model.manifest.artifact("tflite", "features")
    x = global_data[0][:9]
    rows = np.stack([model.embed(row) for row in x])
    np.testing.assert_allclose(model.embed(x), rows, atol=1e-6)
    assert artifact.batch in (None, 1)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda x: x[:, :, :-1], "shape"),
        (lambda x: x[:, 0], "shape"),
        (lambda x: x.astype(np.complex64), "dtype"),
        (lambda x: x.astype(str), "dtype"),
        (lambda x: np.where(x > 0, np.nan, x), "NaN"),
        (lambda x: x[:0], "no examples"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(
    hub: Hub, global_data: tuple, bad, message: str
) -> None:
    model = hub.model(TASK, app_id="com.a")
    with pytest.raises(InvalidInputError, match=message):
        model.predict(bad(global_data[0][:4]))


def test_float64_and_lists_are_accepted(hub: Hub, global_data: tuple) -> None:
    model = hub.model(TASK, app_id="com.a")
    x = global_data[0][:3]
    np.testing.assert_allclose(model.predict(x.astype(np.float64)), model.predict(x), atol=1e-6)
    np.testing.assert_allclose(model.predict(x[0].tolist()), model.predict(x[0]), atol=1e-6)


def test_unknown_task_and_bad_ids(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    with pytest.raises(ModelNotFoundError, match="nothing-here"):
        hub.model("nothing-here", app_id="com.a")
    with pytest.raises(ValueError, match="app_id"):
        hub.model("t", app_id="../escape")


def test_a_new_install_reaches_open_handles_and_old_bundles_can_be_pruned(
    hub: Hub, bundle_dir: Path
) -> None:
    model = hub.model(TASK, app_id="com.a")
    old = model.model_id
    Hub(hub.root, allow_unsigned=True).install(
        bundle_dir, TASK, model_id="v2"
    )  # e.g. another process
    assert model.model_id == "v2"
    assert [name.split("__")[0] for name in hub.prune()] == [old]
    assert hub.prune() == [] and model.predict(np.zeros(model.input_shape, np.float32)).shape == (
        model.num_classes,
    )


def test_installed_files_changed_on_disk_are_detected(hub: Hub) -> None:
    (installed,) = (hub.root / "bundles").iterdir()
    target = installed / "features.onnx"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleVerificationError, match=r"features\.onnx"):
        Hub(hub.root).model(TASK, app_id="com.a", format="onnx")

"""Personalising more than the head: the per-channel input alignment ("input+head")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.device_sdk import BundleError, Hub
from autohas_edge.device_sdk.finetune import (
    HeadHyperparameters,
    InputAlignment,
    InputStatistics,
)
from autohas_edge.server.demo.population import User
from tests.device_sdk.helpers import TASK


def _stats(x: np.ndarray) -> InputStatistics:
    axes = (0, *range(2, x.ndim))
    return InputStatistics(x.mean(axis=axes, dtype=np.float64), x.std(axis=axes, dtype=np.float64))


def test_alignment_undoes_a_per_channel_gain_and_offset() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 40)).astype(np.float32) * [[1.0], [2.0], [0.5]]
    gain, offset = np.array([[1.8], [0.6], [3.0]]), np.array([[0.5], [-2.0], [0.1]])
    user = (x * gain + offset).astype(np.float32)
    aligned = InputAlignment.fit(user, _stats(x)).apply(user)
    assert aligned.dtype == np.float32 and aligned.shape == user.shape
    np.testing.assert_allclose(aligned, x, atol=1e-4)
    images = rng.normal(size=(50, 2, 8, 8)).astype(np.float32)
    again = InputAlignment.fit(images * 3 + 1, _stats(images)).apply(images * 3 + 1)
    np.testing.assert_allclose(again, images, atol=1e-4)


def test_a_flat_channel_is_only_shifted() -> None:
    x = np.random.default_rng(1).normal(size=(20, 2, 10)).astype(np.float32)
    user = x.copy()
    user[:, 1] = 5.0  # a dead sensor axis: no spread to match
    alignment = InputAlignment.fit(user, _stats(x))
    assert np.isfinite(alignment.scale).all() and alignment.scale[1] == 1.0
    assert abs(float(alignment.apply(user)[:, 1].mean()) - float(x[:, 1].mean())) < 1e-5


def test_malformed_statistics_are_a_bundle_error() -> None:
    assert InputStatistics.from_manifest(None, 1) is None
    good = InputStatistics.from_manifest({"mean": [0.1], "std": [2.0]}, 1)
    assert good is not None and good.std.tolist() == [2.0]
    for bad in ({"mean": [0.0]}, {"mean": [0.0, 1.0], "std": [1.0, 1.0]},
                {"mean": [0.0], "std": [0.0]}, {"mean": ["x"], "std": [1.0]}):  # fmt: skip
        with pytest.raises(BundleError, match="input_statistics"):
            InputStatistics.from_manifest(bad, 1)
    with pytest.raises(ValueError, match="trainable"):
        HeadHyperparameters(trainable="everything")


def test_the_manifest_names_what_trains_and_the_training_statistics(manifest_json: dict) -> None:
    ft = manifest_json["fine_tuning"]
    assert ft["hyperparameters"]["trainable"] == "input+head"
    channels = manifest_json["dataset"]["input_shape"][0]
    stats = InputStatistics.from_manifest(ft["input_statistics"], channels)
    assert stats is not None and np.all(stats.std > 0)


@pytest.fixture(scope="module")
def gain_user(global_data: tuple[np.ndarray, np.ndarray]) -> User:
    """A user whose sensor reads 3x too high with an offset of 2: what the alignment undoes."""
    x, y = global_data
    idx = np.random.default_rng(0).choice(len(y), 320, replace=False)
    shifted = (x[idx] * 3.0 + 2.0).astype(np.float32)
    return User("user-gain", "gain", shifted[:120], y[idx[:120]], shifted[120:], y[idx[120:]])


def test_input_and_head_align_the_users_examples_before_the_head(hub: Hub, gain_user: User) -> None:
    """The default ("input+head"): the head trains on, and predicts from, aligned examples."""
    model = hub.model(TASK, app_id="com.both", private=True)
    stats = model._engine.input_statistics
    assert stats is not None
    result = model.fine_tune(gain_user.x_tune, gain_user.y_tune)
    assert result.accepted and result.heldout_accuracy_after > result.heldout_accuracy_before
    head = model._head
    assert head.alignment is not None
    aligned = head.align(gain_user.x_eval)  # later examples, not the ones it was fitted to
    np.testing.assert_allclose(aligned.mean(axis=(0, 2)), stats.mean, atol=0.1)
    np.testing.assert_allclose(aligned.std(axis=(0, 2)), stats.std, rtol=0.1)
    want = head.logits(model.embed(aligned))
    np.testing.assert_array_equal(model.logits(gain_user.x_eval), want)


def test_trainable_head_trains_the_head_alone(hub: Hub, skewed_user: User) -> None:
    """On a user the head alone can help (label skew, reversed signals; a 3x gain needs the
    alignment: the head alone gained one held-out example of 29 on it, within noise)."""
    model = hub.model(TASK, app_id="com.head", private=True)
    tuned = model.fine_tune(
        skewed_user.x_tune, skewed_user.y_tune, hyperparameters={"trainable": "head"}
    )
    assert tuned.accepted and model._head.alignment is None
    features = model.embed(skewed_user.x_eval)
    np.testing.assert_array_equal(model.logits(skewed_user.x_eval), model._head.logits(features))


def test_the_alignment_is_kept_with_the_version_and_reset_drops_it(
    tmp_path: Path, bundle_dir: Path, gain_user: User, trusted_key: str
) -> None:
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    hub.install(bundle_dir, TASK)
    model = hub.model(TASK, app_id="com.keep", private=True)
    base = model.logits(gain_user.x_eval)
    assert model.fine_tune(gain_user.x_tune, gain_user.y_tune).accepted
    tuned = model.logits(gain_user.x_eval)
    (stored,) = (tmp_path / "hub").rglob("v000001.npz")
    with np.load(stored) as data:
        assert {"align_scale", "align_shift"} <= set(data.files)
        meta = json.loads(str(data["meta"]))
    assert meta["hyperparameters"]["trainable"] == "input+head"
    reopened = Hub(tmp_path / "hub", trusted_keys=[trusted_key]).model(
        TASK, app_id="com.keep", private=True
    )
    np.testing.assert_array_equal(reopened.logits(gain_user.x_eval), tuned)
    reopened.reset(0)
    np.testing.assert_array_equal(reopened.logits(gain_user.x_eval), base)

"""Local fine-tuning: the numpy head trainer, improvement for shifted users, rollback, versions."""

from __future__ import annotations

import numpy as np
import pytest

from autohas_edge.device_sdk import Hub, InvalidInputError, LabelError
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    holdout_split,
    loss_and_grads,
    train_head,
)
from tests.device_sdk.helpers import TASK


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x).argmax(1) == y))


def test_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    head = Head(rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=4).astype(np.float32))
    f, y = rng.normal(size=(10, 6)).astype(np.float32), rng.integers(0, 4, 10)
    _, gw, gb = loss_and_grads(head, f, y, smoothing=0.1)
    eps = 1e-3
    for i, j in [(0, 0), (2, 5), (3, 1)]:
        plus, minus = head.copy(), head.copy()
        plus.weight[i, j] += eps
        minus.weight[i, j] -= eps
        numeric = (loss_and_grads(plus, f, y, 0.1)[0] - loss_and_grads(minus, f, y, 0.1)[0]) / (
            2 * eps
        )
        assert gw[i, j] == pytest.approx(numeric, rel=2e-2, abs=1e-4)
    plus = head.copy()
    plus.bias[1] += eps
    assert gb[1] == pytest.approx(
        (loss_and_grads(plus, f, y, 0.1)[0] - loss_and_grads(head, f, y, 0.1)[0]) / eps,
        rel=5e-2,
        abs=1e-3,
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_every_optimizer_fits_separable_data(optimizer: str) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=3, size=(3, 5))
    y = rng.integers(0, 3, 150)
    f = (centres[y] + rng.normal(size=(150, 5))).astype(np.float32)
    head = Head(np.zeros((3, 5), np.float32), np.zeros(3, np.float32))
    hp = HeadHyperparameters(learning_rate=0.05, epochs=20, batch_size=16, optimizer=optimizer)
    trained, losses = train_head(head, f, y, hp)
    assert losses[-1] < losses[0] and trained.accuracy(f, y) > 0.9


def test_hyperparameters_from_the_manifest(manifest_json: dict) -> None:
    hp = HeadHyperparameters.from_mapping(manifest_json["fine_tuning"]["hyperparameters"])
    assert hp.epochs >= 1 and hp.batch_size >= 1 and hp.optimizer in ("sgd", "adam", "rmsprop")
    with pytest.raises(ValueError, match="optimizer"):
        HeadHyperparameters.from_mapping({"optimizer": "lbfgs"})


def test_holdout_split_is_stratified_and_refuses_too_little_data() -> None:
    y = np.array([0] * 8 + [1] * 4 + [2])
    train, held = holdout_split(y, 0.25, seed=0)
    assert sorted(np.concatenate([train, held])) == list(range(len(y)))
    assert set(y[held]) == {0, 1} and 2 in y[train]
    with pytest.raises(InvalidInputError, match="too few"):
        holdout_split(np.array([0, 1, 2]), 0.25, seed=0)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_fine_tuning_improves_a_shifted_users_accuracy(hub: Hub, skewed_user, fmt: str) -> None:
    user = skewed_user
    model = hub.model(TASK, app_id=f"com.{fmt}", private=True, format=fmt)
    before = _accuracy(model, user.x_eval, user.y_eval)
    result = model.fine_tune(user.x_tune, user.y_tune)
    after = _accuracy(model, user.x_eval, user.y_eval)
    assert result.accepted and result.heldout_accuracy_after > result.heldout_accuracy_before
    assert result.version == model.version == 1 and result.heldout_examples > 0
    assert after >= before + 0.10, (
        before,
        after,
    )  # on the user's later examples, not seen in training


def test_onnx_and_tflite_fine_tune_alike(hub: Hub, skewed_user) -> None:
    user = skewed_user
    results = [
        hub.model(TASK, app_id=f"com.{fmt}", private=True, format=fmt).fine_tune(
            user.x_tune, user.y_tune
        )
        for fmt in ("onnx", "tflite")
    ]
    assert results[0].accepted == results[1].accepted
    assert results[0].heldout_accuracy_after == pytest.approx(
        results[1].heldout_accuracy_after, abs=0.05
    )


def test_rollback_when_held_out_accuracy_cannot_improve(hub: Hub, global_data: tuple) -> None:
    model = hub.model(TASK, app_id="com.a")
    x, y = global_data
    right = model.predict(x).argmax(1) == y
    xs, ys = x[right][:80], y[right][:80]  # already all correct: nothing to gain
    assert len(ys) >= 8
    before = model.predict(xs)
    result = model.fine_tune(xs, ys)
    assert not result.accepted and result.heldout_accuracy_before == 1.0
    assert result.version == model.version == 0 and model.versions() == [0]
    np.testing.assert_array_equal(model.predict(xs), before)


def test_diverging_training_is_rolled_back(hub: Hub, skewed_user) -> None:
    model = hub.model(TASK, app_id="com.a")
    user = skewed_user
    result = model.fine_tune(
        user.x_tune, user.y_tune, hyperparameters={"learning_rate": 1e38, "optimizer": "sgd"}
    )
    assert not result.accepted and model.version == 0


def test_versions_persist_and_can_be_reset(hub: Hub, skewed_user) -> None:
    model = hub.model(TASK, app_id="com.a")
    user = skewed_user
    base = model.predict(user.x_eval)
    assert model.fine_tune(user.x_tune, user.y_tune).accepted
    tuned = model.predict(user.x_eval)
    reopened = Hub(hub.root).model(TASK, app_id="com.b")  # a restart, another app sharing the model
    assert reopened.version == 1 and reopened.versions() == [0, 1]
    np.testing.assert_allclose(reopened.predict(user.x_eval), tuned, atol=1e-6)
    model.reset()
    assert model.version == 0 == reopened.version
    np.testing.assert_allclose(model.predict(user.x_eval), base, atol=1e-6)
    model.reset(1)
    np.testing.assert_allclose(reopened.predict(user.x_eval), tuned, atol=1e-6)
    with pytest.raises(ValueError, match="version 7"):
        model.reset(7)


def test_a_half_written_version_is_never_used(hub: Hub, skewed_user) -> None:
    model = hub.model(TASK, app_id="com.a")
    user = skewed_user
    model.fine_tune(user.x_tune, user.y_tune)
    store = model._store
    (store.directory / "v000002.npz.tmp").write_bytes(b"partial")  # what a crash mid-write leaves
    assert Hub(hub.root).model(TASK, app_id="com.a").version == 1
    assert model.fine_tune(user.x_tune, user.y_tune, seed=1).version in (1, 2)


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        (lambda y: y + 100, "outside"),
        (lambda y: -y - 1, "outside"),
        (lambda y: y.astype(np.float32), "dtype"),
        (lambda y: y[:-1], "shape"),
    ],
)
def test_bad_labels_are_refused_and_nothing_changes(
    hub: Hub, skewed_user, labels, error: str
) -> None:
    model = hub.model(TASK, app_id="com.a")
    user = skewed_user
    with pytest.raises(LabelError, match=error):
        model.fine_tune(user.x_tune, labels(user.y_tune))
    assert model.versions() == [0]


def test_wrong_shape_for_fine_tune(hub: Hub, skewed_user) -> None:
    user = skewed_user
    with pytest.raises(InvalidInputError, match="shape"):
        hub.model(TASK, app_id="com.a").fine_tune(user.x_tune[..., :10], user.y_tune)

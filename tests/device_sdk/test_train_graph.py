"""Fine-tuning through the bundle's train-step graphs: agreement with numpy, routing, old bundles, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.common.filetable import MANIFEST
from autohas_edge.device_sdk import (
    BundleError,
    BundleVerificationError,
    Hub,
    InvalidInputError,
    Manifest,
    Model,
)
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    numpy_step,
    train_head,
)
from autohas_edge.device_sdk.train_graph import StepState, TrainStepGraph, open_train_step
from autohas_edge.server.demo.population import User
from tests.device_sdk.helpers import TASK, fine_tune_inputs

RUNTIMES = ("onnx", "tflite")
TOLERANCE = 1e-5
#: (learning_rate, weight_decay, label_smoothing) per optimiser, unlike the export's own checks
SETTINGS = {"sgd": (0.1, 1e-3, 0.05), "adam": (0.01, 1e-2, 0.0), "rmsprop": (0.003, 0.0, 0.1)}


def _graph(bundle: Path, runtime: str, threads: int | None = 1) -> TrainStepGraph:
    graph = open_train_step(bundle, Manifest.load(bundle), runtime, threads)
    assert graph is not None and graph.runtime == runtime
    return graph


def _head(bundle: Path) -> Head:
    with np.load(bundle / "head.npz") as data:
        return Head(data["weight"], data["bias"])


@pytest.fixture(scope="module")
def data(bundle_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """48 rows of real features (reference inputs, and a scaled copy of half) with random labels."""
    with np.load(bundle_dir / "reference.npz") as ref:
        features = ref["features"]
    features = np.concatenate([features, 0.5 * features[:16]]).astype(np.float32)
    labels = np.random.default_rng(3).integers(0, _head(bundle_dir).weight.shape[0], len(features))
    return features, labels


def _close(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / max(1.0, np.abs(want).max())


def _settings(bundle: Path) -> list[HeadHyperparameters]:
    hp = HeadHyperparameters.from_mapping(Manifest.load(bundle).fine_tuning.hyperparameters)
    return [
        replace(hp, optimizer=name, learning_rate=lr, weight_decay=wd, label_smoothing=ls)
        for name, (lr, wd, ls) in SETTINGS.items()
    ]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_step_matches_numpy_for_every_optimizer(
    bundle_dir: Path, data: tuple[np.ndarray, np.ndarray], runtime: str
) -> None:
    """Ten chained steps (moments and step count fed back) against the numpy optimiser, step by step."""
    graph, (x, y) = _graph(bundle_dir, runtime), data
    for hp in _settings(bundle_dir):
        reference = _head(bundle_dir).copy()
        step = numpy_step(hp, reference)
        state = StepState.start(reference)
        for i in range(10):
            rows = slice(4 * i, 4 * i + 3 + i)  # 3..12 rows: every call is a padded one for TFLite
            want = step(x[rows], y[rows])
            loss, state = graph.step(x[rows], y[rows], state, hp)
            assert state.step == i + 1
            assert abs(loss - want) <= TOLERANCE * max(1.0, abs(want)), (hp.optimizer, i)
            assert _close(state.weight, reference.weight) <= TOLERANCE, (hp.optimizer, i)
            assert _close(state.bias, reference.bias) <= TOLERANCE, (hp.optimizer, i)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_whole_fine_tune_matches_numpy(
    bundle_dir: Path, data: tuple[np.ndarray, np.ndarray], runtime: str
) -> None:
    graph, (x, y) = _graph(bundle_dir, runtime), data
    for hp in _settings(bundle_dir):
        hp = replace(hp, epochs=15)  # 48 rows in the manifest's batches of 32 (and 16): 30 steps
        want, want_losses = train_head(_head(bundle_dir), x, y, hp, seed=1)
        got, losses = train_head(_head(bundle_dir), x, y, hp, seed=1, trainer=graph)
        assert len(losses) == len(want_losses) == 15
        assert _close(np.array(losses), np.array(want_losses)) <= TOLERANCE, hp.optimizer
        assert _close(got.weight, want.weight) <= TOLERANCE, hp.optimizer
        assert _close(got.bias, want.bias) <= TOLERANCE, hp.optimizer
        assert not np.array_equal(got.weight, want.weight)  # the steps did run in the graph


def _like_fine_tune(model: Model, user: User, trainer: TrainStepGraph | None) -> Head:
    """What `Model.fine_tune` trains (its split, seed 0, the manifest's hyper-parameters)."""
    start, features, labels, hp = fine_tune_inputs(model, user.x_tune, user.y_tune)
    return train_head(start, features, labels, hp, 0, trainer)[0]


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "tflite-int8"])
def test_model_fine_tune_goes_through_the_graph_by_default(
    hub: Hub, bundle_dir: Path, skewed_user: User, fmt: str
) -> None:
    """The model's new head is, bit for bit, the graph's (run as the hub runs it, default threads)."""
    model = hub.model(TASK, app_id=f"com.{fmt}", private=True, format=fmt)
    graph = _graph(bundle_dir, fmt.split("-")[0], threads=None)
    graph_head = _like_fine_tune(model, skewed_user, graph)
    numpy_head = _like_fine_tune(model, skewed_user, None)
    result = model.fine_tune(skewed_user.x_tune, skewed_user.y_tune)
    assert result.accepted and model.version == 1
    assert graph_head.alignment is not None  # the manifest's default: input+head
    features = model.embed(graph_head.align(skewed_user.x_eval))
    np.testing.assert_array_equal(model.logits(skewed_user.x_eval), graph_head.logits(features))
    assert _close(graph_head.weight, numpy_head.weight) <= TOLERANCE
    assert not np.array_equal(graph_head.weight, numpy_head.weight)  # so not the numpy path


def _strip_train_steps(bundle: Path) -> None:
    """Turn a bundle into one exported before train-step graphs (and input statistics) existed."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    del (
        manifest["fine_tuning"]["input_statistics"],
        manifest["fine_tuning"]["hyperparameters"]["trainable"],
    )
    contract = manifest["fine_tuning"].pop("train_step")
    for graph in contract["graphs"].values():
        (bundle / graph["file"]).unlink()
        del manifest["files"][graph["file"]]
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("fmt", RUNTIMES)
def test_an_old_bundle_still_fine_tunes_with_numpy(
    bundle_copy: Path, tmp_path: Path, skewed_user: User, fmt: str
) -> None:
    _strip_train_steps(bundle_copy)
    assert open_train_step(bundle_copy, Manifest.load(bundle_copy), fmt) is None
    hub = Hub(tmp_path / "old-hub", allow_unsigned=True)  # the edit broke the signature
    hub.install(bundle_copy, TASK)
    model = hub.model(TASK, app_id="com.old", format=fmt)
    numpy_head = _like_fine_tune(model, skewed_user, None)
    assert numpy_head.alignment is None  # no input statistics: the head only
    assert model.fine_tune(skewed_user.x_tune, skewed_user.y_tune).accepted
    features = model.embed(skewed_user.x_eval)
    np.testing.assert_array_equal(model.logits(skewed_user.x_eval), numpy_head.logits(features))


def test_a_batch_larger_than_the_tflite_graph_falls_back_to_numpy(
    bundle_dir: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    graph, (x, y) = _graph(bundle_dir, "tflite"), data
    assert graph.spec.batch is not None
    hp = replace(_settings(bundle_dir)[0], batch_size=graph.spec.batch + 1, epochs=2)
    assert not graph.supports(hp) and graph.start(hp, _head(bundle_dir)) is None
    got, _ = train_head(_head(bundle_dir), x, y, hp, trainer=graph)
    want, _ = train_head(_head(bundle_dir), x, y, hp)
    np.testing.assert_array_equal(got.weight, want.weight)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_inputs_raise_errors_naming_the_problem(
    bundle_dir: Path, data: tuple[np.ndarray, np.ndarray], runtime: str
) -> None:
    graph, (x, y) = _graph(bundle_dir, runtime), data
    hp, start = _settings(bundle_dir)[0], StepState.start(_head(bundle_dir))
    c, d = _head(bundle_dir).weight.shape
    cases = [
        ((x[:4, :-1], y[:4], start), rf"features has shape \(4, {d - 1}\), expected \(n, {d}\)"),
        ((x[:4, None], y[:4], start), "features has shape"),
        ((x[:0], y[:0], start), "with n >= 1"),
        ((x[:4], y[:3], start), r"labels has shape \(3,\), expected \(4,\)"),
        ((x[:4], y[:4] + 0.5, start), "labels must be integers"),
        ((x[:4], np.array([0, 1, c, 0]), start), rf"labels must be in \[0, {c}\)"),
        ((x[:4], np.array([0, -1, 1, 0]), start), rf"labels must be in \[0, {c}\)"),
        ((x[:4], y[:4], replace(start, weight=start.weight[:, :-1])), r"weight has shape"),
        ((x[:4], y[:4], replace(start, v_bias=start.v_bias[:-1])), rf"v_bias has shape .*\({c},\)"),
        ((x[:4], y[:4], replace(start, step=-1)), "step must be >= 0"),
    ]
    if runtime == "tflite":
        rows = int(graph.spec.batch or 0) + 1
        big_x, big_y = np.resize(x, (rows, d)), np.resize(y, rows)
        cases.append(((big_x, big_y, start), f"batch of {rows} rows does not fit"))
    for (features, labels, state), message in cases:
        with pytest.raises(InvalidInputError, match=message) as caught:
            graph.step(features, labels, state, hp)
        assert f"train_step.{runtime}" in str(caught.value)


def test_a_changed_train_step_file_is_refused(hub: Hub) -> None:
    (installed,) = (hub.root / "bundles").iterdir()
    graph = installed / "train_step.onnx"
    graph.chmod(0o644)
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleVerificationError, match=r"train_step\.onnx"):
        hub.model(TASK, app_id="com.changed", format="onnx")


def test_a_contract_naming_a_missing_graph_is_a_bundle_error(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    manifest["fine_tuning"]["train_step"]["graphs"]["onnx"]["file"] = "elsewhere.onnx"
    (bundle_copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"elsewhere\.onnx"):
        open_train_step(bundle_copy, Manifest.load(bundle_copy), "onnx")

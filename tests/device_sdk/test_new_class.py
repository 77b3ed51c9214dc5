"""User-defined classes: a head grown by `Model.add_class` on real bundles, ONNX and TFLite runtimes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.device_sdk import AddClassResult, Hub, InvalidInputError, Model
from autohas_edge.device_sdk.finetune import Head, HeadHyperparameters, train_head
from autohas_edge.device_sdk.train_graph import StepState
from autohas_edge.server.demo.population import User
from tests.device_sdk.helpers import TASK

README = Path(__file__).resolve().parents[2] / "README.md"
RUNTIMES = ("onnx", "tflite")


def square_waves(n: int, seed: int = 0, sign: float = 1.0) -> np.ndarray:
    """`n` noisy square waves `[n, 1, 40]`: a signal none of the MNIST-1D classes looks like."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 40)
    wave = sign * np.sign(np.sin(2 * np.pi * 4 * t))
    return (wave + rng.normal(0.0, 0.2, (n, 40))).astype(np.float32)[:, None, :]


@pytest.fixture(scope="module")
def waves() -> np.ndarray:
    """40 examples of the new class: 10 to add it from, 30 siblings to check it with."""
    return square_waves(40)


@pytest.fixture(scope="module")
def known(global_data: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """100 labelled examples of the bundle's own classes."""
    x, y = global_data
    return x[200:300], y[200:300]


def _share_of(model: Model, x: np.ndarray, name: str) -> float:
    return float(np.mean(np.array(model.predict_label(x)) == name))


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under the hub (but its lock) and a hash of its bytes."""
    files = (p for p in root.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "tflite-int8"])
def test_an_added_class_is_predicted_for_its_examples_siblings(
    hub: Hub, waves: np.ndarray, fmt: str
) -> None:
    model = hub.model(TASK, app_id=f"com.{fmt}", format=fmt)
    before = model.num_classes
    result = model.add_class(" square ", waves[:10])
    assert isinstance(result, AddClassResult) and result.accepted, result
    assert result.name == "square" and result.class_index == before
    assert model.label_names[-1] == "square" and model.num_classes == before + 1
    assert model.added_classes == ("square",)
    assert model.predict(waves[10:]).shape == (30, before + 1)
    assert _share_of(model, waves[10:], "square") >= 0.9
    assert model.predict_label(waves[11]) == "square"  # one example: one name
    assert (result.version, result.previous_version, model.versions()) == (1, 0, [0, 1])


def test_other_apps_sharing_the_model_keep_their_head(
    hub: Hub, waves: np.ndarray, known: tuple, global_data: tuple, skewed_user: User
) -> None:
    x = global_data[0][:64]
    adder = hub.model(TASK, app_id="com.adder")
    other = hub.model(TASK, app_id="com.other")
    assert other.fine_tune(skewed_user.x_tune, skewed_user.y_tune).accepted  # shared version 1
    seen = other.predict(x)
    result = adder.add_class("square", waves[:10], known_x=known[0], known_y=known[1])
    assert result.accepted and result.made_own and not adder.shared
    assert _share_of(adder, waves[10:], "square") >= 0.9
    assert other.shared and other.num_classes == 10 and other.version == 1
    np.testing.assert_array_equal(other.predict(x), seen)  # bit for bit
    again = hub.model(TASK, app_id="com.other")
    assert again.shared and again.label_names == other.label_names
    assert hub.model(TASK, app_id="com.adder").label_names[-1] == "square"  # remembered
    # the adder's fine-tunes are its own from now on
    adder.fine_tune(skewed_user.x_tune, skewed_user.y_tune)
    np.testing.assert_array_equal(other.predict(x), seen)
    # it started from the head it used (shared version 1, copied), not from the download
    assert (result.previous_version, result.version) == (1, 2)
    adder.reset(result.previous_version)
    np.testing.assert_array_equal(adder.predict(x), seen)


def test_share_true_grows_the_shared_head_for_apps_on_it(hub: Hub, waves: np.ndarray) -> None:
    adder = hub.model(TASK, app_id="com.adder")
    peer = hub.model(TASK, app_id="com.peer")
    loner = hub.model(TASK, app_id="com.loner", private=True)
    result = adder.add_class("square", waves[:10], share=True)
    assert result.accepted and not result.made_own and adder.shared
    assert peer.label_names[-1] == "square" and _share_of(peer, waves[10:], "square") >= 0.9
    assert loner.num_classes == 10 and "square" not in loner.label_names
    with pytest.raises(InvalidInputError, match="own model"):
        loner.add_class("circle", waves[:10], share=True)


def test_versions_rollback_and_reset_keep_working_with_a_grown_head(
    hub: Hub, waves: np.ndarray, known: tuple, skewed_user: User
) -> None:
    model = hub.model(TASK, app_id="com.a", private=True)
    base = model.predict(waves[10:])
    first = model.add_class("square", waves[:10], known_x=known[0], known_y=known[1])
    # with the known classes' examples a fine-tune runs; the held-out check keeps it or the imprint
    assert first.accepted and first.losses and not first.made_own
    assert first.method in ("imprint", "imprint+fine-tune")
    tuned = model.fine_tune(skewed_user.x_tune, skewed_user.y_tune)
    assert tuned.accepted and model.version == 2 and model.label_names[-1] == "square"
    # the stored examples of the class trained with the user's: the class is not forgotten
    assert _share_of(model, waves[10:], "square") >= 0.9
    second = model.add_class("inverted", square_waves(20, seed=1, sign=-1.0))
    # square's stored examples give the new class others to train against: a fine-tune runs (and
    # the held-out check keeps it or the imprint alone, whichever does better)
    assert second.accepted and second.losses and second.method in ("imprint", "imprint+fine-tune")
    assert model.added_classes == ("square", "inverted") and model.versions() == [0, 1, 2, 3]
    model.reset(first.version)
    assert model.added_classes == ("square",) and model.num_classes == 11
    model.reset(second.version)
    assert model.num_classes == 12 and _share_of(model, waves[10:], "square") >= 0.9
    model.reset()
    assert model.num_classes == 10 and model.added_classes == ()
    np.testing.assert_array_equal(model.predict(waves[10:]), base)
    fresh = hub.model(TASK, app_id="com.a")  # another handle (or process) sees the same head
    assert fresh.version == 0 and fresh.num_classes == 10


def test_readme_add_class_example_runs(
    hub: Hub, waves: np.ndarray, known: tuple, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README.read_text()
    block = re.search(r"<!-- sdk-add-class:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its add-class example"
    model = hub.model(TASK, app_id="com.example.gestures")
    namespace = {"model": model, "x": known[0], "y": known[1], "x_wave": waves}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    accepted, name, labels = capsys.readouterr().out.split(" ", 2)
    assert (accepted, name) == ("True", "wave")
    assert "wave" in labels and model.num_classes == 10 and not model.shared


# -- the train-step graphs are fixed to the bundle's class count: a grown head trains in numpy -----


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_grown_head_falls_back_to_numpy(
    hub: Hub, waves: np.ndarray, known: tuple, runtime: str
) -> None:
    model = hub.model(TASK, app_id=f"com.{runtime}", private=True, format=runtime)
    graph = model._engine.trainer
    assert graph is not None and graph.runtime == runtime
    assert model.add_class("square", waves[:10], known_x=known[0], known_y=known[1]).accepted
    grown = model._head
    hp = HeadHyperparameters.from_mapping(model.manifest.fine_tuning.hyperparameters)
    assert graph.start(hp, grown) is None  # the graph cannot run an 11-class head
    assert graph.start(hp, model._engine.base_head) is not None  # ... but runs the bundle's
    x, y = model.embed(np.concatenate([known[0], waves])), np.concatenate([known[1], [10] * 40])
    numpy_head, numpy_losses = train_head(grown, x, y, hp, seed=3)
    graph_head, graph_losses = train_head(grown, x, y, hp, seed=3, trainer=graph)
    np.testing.assert_array_equal(graph_head.weight, numpy_head.weight)  # the same numpy steps
    assert graph_losses == numpy_losses


def _step_feeds(classes: int, feature_dim: int, rows: int) -> dict[str, np.ndarray]:
    """One train step's inputs for a `[classes, feature_dim]` head and `rows` rows (4 labelled)."""
    head = Head(np.zeros((classes, feature_dim), np.float32), np.zeros(classes, np.float32))
    state = StepState.start(head)
    labels = np.concatenate([np.array([0, 1, 2, 3], np.int32), np.full(rows - 4, -1, np.int32)])
    names = ("weight", "bias", "m_weight", "m_bias", "v_weight", "v_bias")
    return {
        "features": np.ones((rows, feature_dim), np.float32),
        "labels": labels,
        **{name: getattr(state, name) for name in names},
        "step": np.asarray(0, np.int32),
        "learning_rate": np.asarray(0.01, np.float32),
        "weight_decay": np.asarray(0.0, np.float32),
        "label_smoothing": np.asarray(0.0, np.float32),
        "optimizer": np.asarray(0, np.int32),
    }


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_graph_files_themselves_reject_another_class_count(hub: Hub, runtime: str) -> None:
    """Verified, not assumed: both graphs run C classes and refuse C + 1 (fixed dims in each)."""
    graph = hub.model(TASK, app_id=f"com.{runtime}", format=runtime)._engine.trainer
    assert graph is not None
    c, d, rows = graph.num_classes, graph.feature_dim, graph.spec.batch or 4
    assert graph._run(_step_feeds(c, d, rows))["new_weight"].shape == (c, d)
    with pytest.raises(Exception, match=r"(?i)dimension|shape|size"):  # each runtime's own error
        graph._run(_step_feeds(c + 1, d, rows))


# -- refused, and nothing changes ---------------------------------------------------------------------


def _bad_cases(waves: np.ndarray) -> dict[str, tuple[dict, str]]:
    nan = waves[:10].copy()
    nan[3, 0, 5] = np.nan
    return {
        "four examples": ({"name": "circle", "examples": waves[:4]}, "at least 5 examples"),
        "one example": ({"name": "circle", "examples": waves[0]}, "at least 5 examples"),
        "wrong shape": ({"name": "circle", "examples": waves[:10, :, :-1]}, "shape"),
        "NaN": ({"name": "circle", "examples": nan}, "NaN"),
        "strings": ({"name": "circle", "examples": waves[:10].astype(str)}, "dtype"),
        "a bundle class": ({"name": " 3 ", "examples": waves[:10]}, "already has a class"),
        "an added class": ({"name": "SQUARE", "examples": waves[:10]}, "already has a class"),
        "empty name": ({"name": "  ", "examples": waves[:10]}, "1 to 64 characters"),
        "not a name": ({"name": 7, "examples": waves[:10]}, "must be a string"),
        "control chars": ({"name": "a\nb", "examples": waves[:10]}, "control characters"),
        "known_x alone": (
            {"name": "circle", "examples": waves[:10], "known_x": waves[:10]},
            "together",
        ),
        "known label out of range": (
            {"name": "circle", "examples": waves[:10], "known_x": waves[:3], "known_y": [0, 1, 12]},
            r"outside \[0, 11\)",
        ),
        "holdout": ({"name": "circle", "examples": waves[:10], "holdout": 1.5}, "holdout"),
        "min_recall": ({"name": "circle", "examples": waves[:10], "min_recall": 2.0}, "min_recall"),
    }


def test_bad_input_is_refused_and_changes_nothing(hub: Hub, waves: np.ndarray) -> None:
    model = hub.model(TASK, app_id="com.a")
    other = hub.model(TASK, app_id="com.b")
    assert model.add_class("square", waves[:10], share=True).accepted  # "square" is taken
    state = (_snapshot(hub.root), model.label_names, model.versions(), model.version)
    for case, (kwargs, message) in _bad_cases(waves).items():
        with pytest.raises(InvalidInputError, match=message):
            model.add_class(**kwargs)
        assert (_snapshot(hub.root), model.label_names, model.versions(), model.version) == state, (
            case
        )
    assert model.shared and other.shared and other.num_classes == 11


def test_a_class_failing_the_heldout_check_changes_nothing(hub: Hub, global_data: tuple) -> None:
    """The new class's examples are copies of an old class's example: the check must fail."""
    x, y = global_data
    model = hub.model(TASK, app_id="com.a")
    right = int(np.flatnonzero(model.predict(x[:50]).argmax(1) == y[:50])[0])
    copies = np.repeat(x[right : right + 1], 8, axis=0)
    state = _snapshot(hub.root)
    result = model.add_class("copy", copies, known_x=copies, known_y=[y[right]] * 8)
    assert not result.accepted and result.version == result.previous_version == 0
    assert not result.made_own and model.shared and model.num_classes == 10
    assert _snapshot(hub.root) == state

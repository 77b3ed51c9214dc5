"""`run_search` end to end: the run directory contract, resume, cancellation, modes, budget, stopping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autohas_edge.server.search import (
    ProgressEvent,
    SearchCancelled,
    SearchConfig,
    load_dataset,
    load_model,
    run_search,
)
from autohas_edge.server.search.defaults import FIXED_ARCH, FIXED_HPARAMS, arch_choices
from autohas_edge.server.search.models import LAYOUTS
from autohas_edge.server.search.retraining import accuracy
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace
from tests.fixtures.search_fixtures import toy_config

RESULT_KEYS = {
    "architecture",
    "hyperparameters",
    "encodings",
    "params",
    "test_accuracy",
    "search_seconds",
    "retrain_seconds",
    "retrain_steps",
    "checkpoint",
    "dataset",
    "fine_tuning",
    "config",
    "lr_trajectory",
}


def test_tiny_run_writes_the_run_directory_contract(tiny_run: Path) -> None:
    result = json.loads((tiny_run / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    assert result["dataset"] == {
        "name": "mnist1d",
        "input_shape": [1, 40],
        "num_classes": 10,
        "label_names": [str(i) for i in range(10)],
        "layout": "signal",
        "layout_source": "guessed from the shape",
        "family": "conv1d",
        "notes": [],
    }
    assert set(result["fine_tuning"]) == {
        "learning_rate",
        "weight_decay",
        "epochs",
        "batch_size",
        "label_smoothing",
        "optimizer",
    }
    assert len(result["lr_trajectory"]) == result["search_steps"]
    assert SearchConfig.from_json(result["config"]).dataset == "mnist1d"
    assert (tiny_run / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(tiny_run / "model.pt", weights_only=True)
    assert {"model_args", "state_dict", "config"} <= set(saved)
    state = torch.load(result["checkpoint"], weights_only=True)
    assert state["done"] and state["config"] == result["config"]


def test_load_model_reproduces_the_reported_accuracy(tiny_run: Path) -> None:
    model, result = load_model(tiny_run)
    assert not model.training
    assert (
        sum(p.numel() for p in model.parameters())
        == result["params"]
        <= result["config"]["max_params"]
    )
    data = load_dataset("mnist1d", seed=result["config"]["seed"])
    acc = accuracy(model, torch.as_tensor(data.x_test), torch.as_tensor(data.y_test))
    assert acc == pytest.approx(result["test_accuracy"])


def test_resume_equals_an_uninterrupted_run(tmp_path: Path, toy_signal_npz: Path) -> None:
    config = toy_config(toy_signal_npz, checkpoint_every=100)
    full = run_search(config, tmp_path / "full")
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] == 4

    with pytest.raises(SearchCancelled, match="step 3"):
        run_search(config, tmp_path / "resumed", should_stop=stop_after_three)
    assert (
        torch.load(tmp_path / "resumed" / "search.pt", weights_only=True)["searcher"]["step"] == 3
    )
    resumed = run_search(config, tmp_path / "resumed")
    for key in (
        "architecture",
        "hyperparameters",
        "encodings",
        "test_accuracy",
        "lr_trajectory",
        "params",
    ):
        assert resumed[key] == full[key], key
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path: Path, toy_signal_npz: Path) -> None:
    run_search(toy_config(toy_signal_npz, steps=2, retrain_steps=1), tmp_path)
    with pytest.raises(ValueError, match="different config"):
        run_search(toy_config(toy_signal_npz, steps=3, retrain_steps=1), tmp_path)


def test_resume_follows_the_same_data_to_another_path_but_not_other_data(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    """A resumed job's snapshot may sit elsewhere (another Ray node, a moved data dir)."""
    run, calls = tmp_path / "run", iter(range(100))
    stop_after_one = lambda: next(calls) == 2  # noqa: E731
    with pytest.raises(SearchCancelled, match="step 2"):
        run_search(
            toy_config(toy_signal_npz, steps=3, retrain_steps=1), run, should_stop=stop_after_one
        )
    moved = tmp_path / "elsewhere.npz"
    moved.write_bytes(toy_signal_npz.read_bytes())
    events: list[ProgressEvent] = []
    run_search(toy_config(moved, steps=3, retrain_steps=1), run, on_progress=events.append)
    steps = [e.step for e in events if e.stage == "search"]
    assert steps and steps[0] > 1  # it went on from the checkpoint
    other = tmp_path / "other.npz"
    with np.load(toy_signal_npz) as data:
        np.savez(other, **{k: data[k] for k in data.files}, extra=np.zeros(1))
    with pytest.raises(ValueError, match="different config"):
        run_search(toy_config(other, steps=3, retrain_steps=1), tmp_path / "run")


def test_progress_events_cover_every_stage(tmp_path: Path, toy_signal_npz: Path) -> None:
    events: list[ProgressEvent] = []
    run_search(toy_config(toy_signal_npz), tmp_path, on_progress=events.append)
    stages = [e.stage for e in events]
    assert stages[0] == "load" and stages[-2:] == ["evaluate", "done"]
    search = [e for e in events if e.stage == "search"]
    assert [e.step for e in search] == list(range(1, 7)) and search[-1].total_steps == 6
    assert stages.count("retrain") == 8
    assert abs(sum(search[-1].encodings["optimizer"].values()) - 1) < 1e-6
    assert (
        search[0].val_loss != search[0].val_loss and search[-1].val_loss > 0
    )  # NaN during warm-up


@pytest.mark.parametrize("mode", ["nas", "hpo"])
def test_modes_keep_their_half_fixed(tmp_path: Path, toy_signal_npz: Path, mode: str) -> None:
    result = run_search(toy_config(toy_signal_npz, mode=mode), tmp_path)
    if mode == "nas":
        for name, value in FIXED_HPARAMS.items():
            assert result["hyperparameters"][name] == value
        assert any(
            len(probs) > 1 and max(probs.values()) > min(probs.values())
            for name, probs in result["encodings"].items()
            if name.startswith("b")
        )
    else:
        assert all(
            v == FIXED_ARCH["kernel"]
            for k, v in result["architecture"].items()
            if k.endswith("kernel")
        )
        assert result["hyperparameters"]["optimizer"] in ("sgd", "adam", "rmsprop")
        assert max(result["encodings"]["optimizer"].values()) > 1 / 3


def test_derived_model_respects_the_parameter_budget(tmp_path: Path, toy_signal_npz: Path) -> None:
    result = run_search(
        toy_config(toy_signal_npz, max_params=12_000, cost_weight=1.0), tmp_path / "a"
    )
    assert result["params"] <= 12_000
    with pytest.raises(ValueError, match="below the smallest model"):
        run_search(toy_config(toy_signal_npz, max_params=500), tmp_path / "b")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"encoding_tol": 1.0, "check_every": 1}, "encodings changed"),
        ({"grad_tol": 1e9}, "gradient norm"),
    ],
)
def test_stopping_criteria(
    tmp_path: Path, toy_signal_npz: Path, changes: dict, reason: str
) -> None:
    result = run_search(toy_config(toy_signal_npz, steps=20, **changes), tmp_path)
    assert result["search_steps"] < 20 and reason in result["stop_reason"]


@pytest.mark.parametrize("strategy", ["differentiable", "reinforce"])
def test_a_clearly_too_large_learning_rate_loses_weight(
    tmp_path: Path, toy_signal_npz: Path, strategy: str
) -> None:
    """Both strategies, on real rewards: the controller scores one-step temporary weights."""
    hparams = (
        Choice(
            "learning_rate", (0.05, 5.0), CONTINUOUS
        ),  # 5.0 with momentum 0.9: clearly too large
        Choice("weight_decay", (0.0,), CONTINUOUS),
        Choice("optimizer", ("sgd",)),
        Choice("loss", ("ce",)),
        Choice("augment", ("none",)),
    )
    space = SearchSpace(arch_choices(LAYOUTS["conv1d"], fixed=True), hparams)
    result = run_search(
        toy_config(
            toy_signal_npz,
            steps=16,
            horizon=2,  # the differentiable search's encodings move once per window
            warmup_fraction=0.0,
            encoding_lr=0.1,
            space=space,
            strategy=strategy,
            samples=8,
        ),
        tmp_path,
    )
    assert result["encodings"]["learning_rate"]["5.0"] < 0.3
    assert (
        result["lr_trajectory"][-1] < result["lr_trajectory"][0]
    )  # the searched schedule moved down


def test_explicit_and_fast_paths_give_the_same_search(tmp_path: Path, toy_signal_npz: Path) -> None:
    hparams = (
        Choice("learning_rate", (0.2, 0.05), CONTINUOUS),
        Choice("weight_decay", (1e-3,), CONTINUOUS),
        Choice("optimizer", ("sgd", "adam")),
        Choice("loss", ("ce", "ls0.1")),
        Choice("augment", ("none", "shift")),
    )
    space = SearchSpace(arch_choices(LAYOUTS["conv1d"], fixed=False), hparams)
    results = [
        run_search(
            toy_config(toy_signal_npz, steps=4, retrain_steps=1, space=space, weights_path=path),
            tmp_path / path,
        )
        for path in ("fast", "explicit")
    ]
    for name, probs in results[0]["encodings"].items():
        assert probs == pytest.approx(results[1]["encodings"][name], abs=1e-4), name
    assert (
        max(abs(p - 0.5) for p in results[0]["encodings"]["optimizer"].values()) > 1e-3
    )  # they moved


@pytest.mark.parametrize("dataset", ["digits", "tabular"])
def test_other_families_run_end_to_end(tmp_path: Path, toy_tabular_npz: Path, dataset: str) -> None:
    spec = "digits" if dataset == "digits" else str(toy_tabular_npz)
    result = run_search(
        toy_config(toy_tabular_npz, dataset=spec, steps=3, retrain_steps=3), tmp_path
    )
    model, _ = load_model(tmp_path)
    x = torch.zeros(2, *result["dataset"]["input_shape"])
    assert model(x).shape == (2, result["dataset"]["num_classes"])


def test_reinforce_strategy_moves_the_encodings(tmp_path: Path, toy_signal_npz: Path) -> None:
    result = run_search(toy_config(toy_signal_npz, strategy="reinforce", samples=3), tmp_path)
    assert any(max(p.values()) - min(p.values()) > 1e-4 for p in result["encodings"].values())


def test_device_cuda_follows_availability(tmp_path: Path, toy_signal_npz: Path) -> None:
    config = toy_config(toy_signal_npz, device="cuda", steps=2, retrain_steps=1)
    if torch.cuda.is_available():
        assert run_search(config, tmp_path)["device"].startswith("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            run_search(config, tmp_path)


def test_a_finished_search_retrains_under_a_new_schedule_without_searching_again(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    first = run_search(toy_config(toy_signal_npz, steps=4, retrain_steps=4), tmp_path)
    lrs: list[float] = []
    again = run_search(
        toy_config(toy_signal_npz, steps=4, retrain_steps=12, retrain_schedule="searched"),
        tmp_path,
        on_progress=lambda e: lrs.append(e.learning_rate) if e.stage == "retrain" else None,
    )
    assert again["encodings"] == first["encodings"]  # the search was not run again
    assert again["retrain_steps"] == 12 and again["config"]["retrain_schedule"] == "searched"
    trajectory = again["lr_trajectory"]
    assert len(lrs) == 12 and max(lrs) <= max(trajectory) + 1e-6  # rounded in result.json
    with pytest.raises(ValueError, match="retrain_schedule must be one of"):
        toy_config(toy_signal_npz, retrain_schedule="linear")


def test_a_searched_schedule_is_stretched_to_the_retraining() -> None:
    from autohas_edge.server.search.retraining import stretched

    trajectory = [0.4, 0.2, 0.1]
    assert [stretched(trajectory, t, 5) for t in range(5)] == pytest.approx(
        [0.4, 0.3, 0.2, 0.15, 0.1]
    )
    with pytest.raises(ValueError, match="empty"):
        stretched([], 0, 3)


def test_a_time_budget_stops_the_search_and_still_derives(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    config = toy_config(
        toy_signal_npz, steps=500, retrain_steps=2, max_search_seconds=1e-6, plot=False
    )
    result = run_search(config, tmp_path)
    assert result["stop_reason"] == "time budget of 1e-06 s" and result["search_steps"] < 500
    assert (tmp_path / "model.pt").exists() and not (tmp_path / "search.png").exists()
    with pytest.raises(ValueError, match="max_search_seconds must be a finite number >= 0"):
        toy_config(toy_signal_npz, max_search_seconds=-1.0)

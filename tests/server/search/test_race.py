"""The training race: which (optimizer, rate) pairs race, that the best fresh training wins, and
how `run_search` records it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from autohas_edge.server.search import SearchConfig, run_search
from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.models import LAYOUTS, build_model, model_args_for
from autohas_edge.server.search.race import (
    MIN_STEPS,
    Entry,
    Recipe,
    Split,
    candidates,
    cost_in_steps,
    fitted_steps,
    run_race,
    rungs,
    time_trainings,
    winner,
)
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace
from tests.fixtures.search_fixtures import toy_config

HPARAMS = {"weight_decay": 0.0, "loss": "ce", "augment": "noise"}


def _space(rates: tuple[float, ...], optimizers: tuple[str, ...]) -> SearchSpace:
    arch = default_space(LAYOUTS["mlp"], "tabular", "hpo").arch
    hparams = (
        Choice("learning_rate", rates, CONTINUOUS),
        Choice("weight_decay", (0.0,), CONTINUOUS),
        Choice("optimizer", optimizers),
        Choice("loss", ("ce",)),
        Choice("augment", ("noise",)),
    )
    return SearchSpace(arch, hparams)


def test_candidates_are_every_basis_pair_with_the_derived_pair_first() -> None:
    space = _space((0.4, 0.05), ("sgd", "adam"))
    pairs = candidates(space, {"optimizer": "adam", "learning_rate": 0.2})
    assert pairs[0] == ("adam", 0.2)
    assert sorted(pairs[1:]) == [("adam", 0.05), ("adam", 0.4), ("sgd", 0.05), ("sgd", 0.4)]
    # a derived pair that is itself a basis pair races once
    again = candidates(space, {"optimizer": "sgd", "learning_rate": 0.4})
    assert again[0] == ("sgd", 0.4) and len(again) == 4 and len(set(again)) == 4


def test_a_space_with_one_pair_has_no_race() -> None:
    fixed = default_space(LAYOUTS["conv1d"], "signal", "nas")
    assert candidates(fixed, {"optimizer": "sgd", "learning_rate": 0.1}) == []


def test_winner_prefers_accuracy_then_loss_then_the_earliest() -> None:
    a, b = Entry("sgd", 0.1, 40, 0.9, 0.5), Entry("adam", 0.1, 40, 0.9, 0.4)
    c = Entry("sgd", 0.4, 40, 0.8, 0.1)
    assert winner([a, b, c]) is b
    assert winner([a, Entry("adam", 0.2, 40, 0.9, 0.5)]) is a
    # only the longest trainings count: a short one's better score is not comparable
    assert winner([Entry("sgd", 0.05, 10, 1.0, 0.0), c]) is c


def test_halving_races_a_quarter_then_the_best_third() -> None:
    assert rungs(10, 40) == [(10, 10), (4, 40)]
    assert cost_in_steps(10, 40) == 260
    assert rungs(10, 39) == [(10, 39)]  # a first rung under MIN_STEPS: one rung
    assert rungs(4, 80) == [(4, 80)]  # too few pairs to halve


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.tensor([[3.0, 0, 0, 0, 0, 0], [0, 3.0, 0, 0, 0, 0], [0, 0, 3.0, 0, 0, 0]])
    return centers[y] + torch.randn(n, 6, generator=gen), y


def test_the_pair_that_trains_wins_the_race() -> None:
    """A rate of 1e-6 leaves the model where it started; 0.3 separates the blobs in 30 steps."""
    arch = {c.name: c.candidates[0] for c in _space((0.1,), ("sgd",)).arch}
    args = model_args_for(LAYOUTS["mlp"], (6,), 3, arch)
    split = Split(*_blobs(300, 0), *_blobs(150, 1), scale=1.0)
    pairs = [("sgd", 1e-6), ("sgd", 0.3)]
    recipe = Recipe(steps=30, batch_size=32, grad_clip=5.0, seed=0)
    entries = run_race(lambda: build_model(args), pairs, HPARAMS, split, recipe)
    assert [(e.optimizer, e.learning_rate, e.steps) for e in entries] == [(*p, 30) for p in pairs]
    assert entries[1].val_accuracy > 0.9 > entries[0].val_accuracy
    assert winner(entries).learning_rate == 0.3
    # six pairs at 40 steps: all six for 10 steps, then the best two for 40
    many = [("sgd", r) for r in (1e-6, 1e-5, 0.3, 1e-4, 0.1, 1e-7)]
    halved = run_race(lambda: build_model(args), many, HPARAMS, split, replace(recipe, steps=40))
    assert [e.steps for e in halved] == [10] * 6 + [40] * 2
    assert {e.learning_rate for e in halved[6:]} == {0.3, 0.1}
    assert winner(halved).steps == 40 and winner(halved).val_accuracy > 0.9


def test_run_search_retrains_with_the_race_winner(tmp_path: Path, toy_signal_npz: Path) -> None:
    events: list[str] = []
    result = run_search(
        toy_config(toy_signal_npz, plot=False, race_steps=5),
        tmp_path,
        lambda e: events.append(e.stage),
    )
    race = result["race"]
    assert race["steps"] == 5 and len(race["entries"]) == 10  # 3 optimizers x 3 rates + derived
    first = race["entries"][0]
    assert (first["optimizer"], first["learning_rate"]) == (
        race["derived"]["optimizer"],
        pytest.approx(race["derived"]["learning_rate"], rel=1e-5),
    )
    best = max(race["entries"], key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert result["hyperparameters"]["optimizer"] == best["optimizer"]
    assert result["hyperparameters"]["learning_rate"] == pytest.approx(best["learning_rate"])
    assert events.count("race") == 10 and events.index("race") < events.index("retrain")


def test_race_steps_zero_keeps_the_derived_pair(tmp_path: Path, toy_signal_npz: Path) -> None:
    result = run_search(toy_config(toy_signal_npz, plot=False, race_steps=0), tmp_path)
    assert result["race"] == {"steps": 0, "derived": result["race"]["derived"], "entries": []}
    for key in ("optimizer", "learning_rate"):
        assert result["hyperparameters"][key] == result["race"]["derived"][key]


def test_race_length_follows_the_retraining() -> None:
    assert SearchConfig(retrain_steps=1500).race_length == 75
    assert SearchConfig(retrain_steps=100).race_length == 20
    assert SearchConfig(retrain_steps=8).race_length == 8
    assert SearchConfig(retrain_steps=0).race_length == 0
    assert SearchConfig(retrain_steps=0, race_steps=40).race_length == 40
    with pytest.raises(ValueError, match="race_steps"):
        SearchConfig(race_steps=-2)


def test_fitted_steps_shorten_the_race_to_its_budget() -> None:
    assert fitted_steps(40, 10, per_step=0.01, seconds=10.0) == 40  # fits whole (2.6 s)
    assert fitted_steps(40, 10, per_step=0.01, seconds=2.0) == 20  # one rung of 20 steps: 2 s
    assert fitted_steps(40, 10, per_step=0.01, seconds=0.5) == 0  # under MIN_STEPS: no race
    assert MIN_STEPS == 10
    # 14 trainings (10 at 10 steps, 4 at 40) at 0.1 s each on top of 2.6 s of steps: 4 s
    assert fitted_steps(40, 10, per_step=0.01, seconds=4.0, per_training=0.1) == 40
    # under it, no halving (a first rung under MIN_STEPS): ten trainings of 29 steps, 3.9 s
    assert fitted_steps(40, 10, per_step=0.01, seconds=3.9, per_training=0.1) == 29
    assert fitted_steps(40, 10, per_step=0.01, seconds=1.0, per_training=0.1) == 0


def test_race_trainings_are_timed_per_step_and_per_training() -> None:
    arch = {c.name: c.candidates[0] for c in _space((0.1,), ("sgd",)).arch}
    args = model_args_for(LAYOUTS["mlp"], (6,), 3, arch)
    split = Split(*_blobs(300, 0), *_blobs(150, 1), scale=1.0)
    recipe = Recipe(steps=30, batch_size=32, grad_clip=5.0, seed=0)
    timing = time_trainings(
        lambda: build_model(args),
        {**HPARAMS, "optimizer": "sgd", "learning_rate": 0.1},
        split,
        recipe,
    )
    assert 0 < timing.per_step < 1.0 and 0 <= timing.per_training < 1.0


def test_a_race_that_cannot_fit_its_time_budget_does_not_run(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    config = toy_config(toy_signal_npz, plot=False, race_steps=50, max_race_seconds=1e-4)
    result = run_search(config, tmp_path)
    assert result["race"]["steps"] == 0 and result["race"]["entries"] == []
    assert result["hyperparameters"]["optimizer"] == result["race"]["derived"]["optimizer"]
    assert 0 < result["race_seconds"] < 5  # the timing probe only

"""A real, tiny run of the comparison harness: the compute accounting must add up."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from bench.compare import methods
from bench.compare.harness import METHODS, Preset, run_cell
from bench.compare.methods import MethodRun
from bench.compare.report import accuracy_table, by_key, cost_table, curve_table

#: AutoHAS: 4 search steps (1 warm-up), 6 retraining steps; baselines: 1.5x its compute, 6-step trials
TOY = Preset("toy", ("toy",), (0,), 4, 6, 1.5, 1, batch_size=16, encoding_batch_size=16)


def _toy_npz(path: Path) -> Path:
    """A small separable 1-D problem: class c is a bump at position 3c + 2, plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    x = rng.normal(0, 0.3, (150, 1, 12)).astype(np.float32)
    x[np.arange(150), 0, 3 * y + 2] += 3.0
    np.savez(path, x=x, y=y.astype(np.int64))
    return path


@pytest.fixture(scope="module")
def cell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, MethodRun], list]]:
    """Every method once on the toy problem, and the Optuna studies the TPE baseline created."""
    dataset = str(_toy_npz(tmp_path_factory.mktemp("compare") / "toy.npz"))
    studies: list[optuna.Study] = []
    make_study = methods.make_study

    def spy(seed: int, startup_trials: int) -> optuna.Study:
        studies.append(make_study(seed, startup_trials))
        return studies[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(methods, "make_study", spy)
            runs = run_cell(dataclasses.replace(TOY, datasets=(dataset,)), dataset, 0, log=print)
    finally:
        torch.set_num_threads(threads)
    yield {r.method: r for r in runs}, studies


def test_every_method_ran(cell: tuple[dict[str, MethodRun], list]) -> None:
    runs, _ = cell
    assert sorted(runs) == sorted(METHODS)
    for run in runs.values():
        assert run.points and all(0.0 <= p.test_accuracy <= 1.0 for p in run.points)


def test_autohas_compute_matches_its_step_structure(
    cell: tuple[dict[str, MethodRun], list],
) -> None:
    """Measured examples = first iterations + (temporary-weight backward passes + validation pass)
    after warm-up + retraining; the fast path back-propagates twice when a smoothed loss is a basis."""
    runs, _ = cell
    b, e, warmup, steps = TOY.batch_size, TOY.encoding_batch_size, 1, TOY.search_steps
    backward_passes = {
        "autohas-joint": 2,
        "autohas-hpo": 2,
        "autohas-nas": 1,
    }  # nas fixes the loss to ce
    for method, passes in backward_passes.items():
        info, total = runs[method].info, runs[method].final.examples
        assert info["search_examples"] == warmup * b + (steps - warmup) * (b + passes * e + e)
        assert info["retrain_examples"] == TOY.retrain_steps * b
        assert total == info["search_examples"] + info["retrain_examples"]


def test_baselines_stay_within_budget(cell: tuple[dict[str, MethodRun], list]) -> None:
    runs, _ = cell
    trial = TOY.retrain_steps * TOY.batch_size
    budget = math.ceil(TOY.budget_factor * runs["autohas-joint"].final.examples)
    assert runs["random"].budget == runs["tpe"].budget == budget
    assert all(
        runs[m].final.examples <= budget for m in ("autohas-joint", "autohas-nas", "autohas-hpo")
    )
    for method in ("random", "tpe"):
        run = runs[method]
        used = [p.examples for p in run.points]
        assert np.all(np.diff([0, *used]) == trial)  # every trial costs exactly its training
        assert used[-1] <= run.budget + trial  # at most one trial's overshoot
        assert len(used) == 1 or used[-2] < run.budget  # no trial starts after the budget is spent


def test_best_so_far_curves_are_monotone(cell: tuple[dict[str, MethodRun], list]) -> None:
    runs, _ = cell
    for method in ("random", "tpe"):
        points = runs[method].points
        assert all(a.val_accuracy <= b.val_accuracy for a, b in itertools.pairwise(points))
        assert all(a.seconds <= b.seconds for a, b in itertools.pairwise(points))
        trials = runs[method].info["trials"]
        assert points[-1].val_accuracy == max(t["val_accuracy"] for t in trials)


def test_tpe_is_a_real_optuna_study(cell: tuple[dict[str, MethodRun], list]) -> None:
    runs, studies = cell
    assert len(studies) == 1 and isinstance(studies[0].sampler, optuna.samplers.TPESampler)
    complete = studies[0].get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    trials = runs["tpe"].info["trials"]
    assert [t.params for t in complete] == [t["config"] for t in trials]
    assert [t.value for t in complete] == [t["val_accuracy"] for t in trials]


def test_report_tables_render(cell: tuple[dict[str, MethodRun], list]) -> None:
    runs, _ = cell
    dataset = runs["random"].dataset
    preset = dataclasses.replace(TOY, datasets=(dataset,))
    keyed = by_key(runs.values())
    for table in (accuracy_table, curve_table, cost_table):
        text = table(keyed, preset, dataset)
        assert text.count("\n") >= 2 and "nan" not in text

"""Presets and the benchmark loop: every method on every (dataset, seed) under one example budget.

Per (dataset, seed), AutoHAS joint runs first; its measured compute C (search + retraining, in
training examples) sets the budget of the trial-based baselines to ``budget_factor * C``, so that the
curves show both the accuracy at equal compute (at C) and how much compute a baseline needs to reach
AutoHAS's accuracy (up to the budget). NAS-only and HPO-only use the same search settings as joint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from autohas_edge.server.search import SearchConfig, load_dataset
from bench.compare.methods import MethodRun, TrialSettings, run_autohas, run_random, run_tpe
from bench.compare.space import JointSpace

METHODS = ("autohas-joint", "autohas-nas", "autohas-hpo", "random", "tpe")


@dataclass(frozen=True)
class Preset:
    """Sizes of one benchmark: datasets, seeds, AutoHAS's search/retraining steps, baseline budget."""

    name: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    search_steps: int
    retrain_steps: int  # AutoHAS retraining; also the length of every baseline trial
    budget_factor: float  # baselines' example budget, in units of AutoHAS joint's compute
    tpe_startup: int  # random trials before TPE starts modelling
    batch_size: int = 128
    encoding_batch_size: int = 64

    def __post_init__(self) -> None:
        if not self.datasets or not self.seeds:
            raise ValueError("a preset needs at least one dataset and one seed")
        if self.search_steps < 1 or self.retrain_steps < 1 or self.batch_size < 8:
            raise ValueError("search_steps and retrain_steps must be >= 1, batch_size >= 8")
        if not self.budget_factor >= 1.0:
            raise ValueError(f"budget_factor must be >= 1, got {self.budget_factor}")

    def search_config(self, dataset: str, mode: str, seed: int) -> SearchConfig:
        """The engine config for AutoHAS in `mode` (defaults otherwise; CPU; one checkpoint at the end)."""
        return SearchConfig(
            dataset=dataset,
            mode=mode,
            seed=seed,
            steps=self.search_steps,
            retrain_steps=self.retrain_steps,
            batch_size=self.batch_size,
            encoding_batch_size=self.encoding_batch_size,
            checkpoint_every=self.search_steps,
            device="cpu",
        )


#: a few minutes on 2 idle cores (a smoke run: too short to train good models)
QUICK = Preset("quick", ("mnist1d", "digits"), (0,), 20, 80, 2.0, 2)
#: about 30 minutes on 2 idle cores
DEFAULT = Preset("default", ("mnist1d", "digits"), (0, 1, 2), 40, 200, 3.0, 3)
PRESETS = {p.name: p for p in (QUICK, DEFAULT)}

Log = Callable[[str], None]


def run_cell(preset: Preset, dataset: str, seed: int, log: Log = print) -> list[MethodRun]:
    """All methods on one dataset and seed; the baselines' budget follows AutoHAS joint's compute."""
    runs: list[MethodRun] = []

    def record(run: MethodRun) -> MethodRun:
        run.dataset = dataset  # the spec as given (a path for an .npz), so reports can key on it
        runs.append(run)
        log(_line(run))
        return run

    joint = record(run_autohas(preset.search_config(dataset, "joint", seed)))
    for mode in ("nas", "hpo"):
        record(run_autohas(preset.search_config(dataset, mode, seed)))
    config = preset.search_config(dataset, "joint", seed)
    data = load_dataset(dataset, seed=seed)
    space, settings = JointSpace.for_data(data, config), TrialSettings.like(config)
    budget = math.ceil(preset.budget_factor * joint.final.examples)
    record(run_random(data, space, seed, budget, settings))
    record(run_tpe(data, space, seed, budget, settings, preset.tpe_startup))
    return runs


def run_preset(preset: Preset, log: Log = print) -> list[MethodRun]:
    """Every cell of the preset, datasets outermost."""
    cells = [(dataset, seed) for dataset in preset.datasets for seed in preset.seeds]
    return [run for dataset, seed in cells for run in run_cell(preset, dataset, seed, log)]


def _line(run: MethodRun) -> str:
    p = run.final
    trials = f", {len(run.points)} trials" if run.budget else ""
    return (
        f"{run.dataset:8s} seed {run.seed} {run.method:14s} test {p.test_accuracy:.3f} "
        f"at {p.examples / 1e3:.0f}k examples, {p.seconds:.0f} s{trials}"
    )

"""The compared methods, each returning a `MethodRun`: its best-so-far test accuracy vs compute.

- AutoHAS in `joint`, `nas` and `hpo` mode: one `run_search` (search + retraining of the derived model
  on train + validation + test evaluation); one point at its total compute.
- Random search and Optuna TPE over the same joint space: trials trained from scratch on the training
  split until the example budget is used up (the last trial may overshoot it); after each trial a point
  with the incumbent, i.e. the trial with the best validation accuracy so far, and its test accuracy.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna

from autohas_edge.server.search import Dataset, SearchConfig, run_search
from autohas_edge.server.search.space import CONTINUOUS
from bench.compare.child import TrialOutcome, train_trial
from bench.compare.meter import ComputeMeter, Reading
from bench.compare.space import Config, JointSpace, uniform_draw, value_range

#: consecutive infeasible draws after which a baseline gives up (the default spaces are ~80% feasible)
MAX_REJECTIONS = 1000


@dataclass(frozen=True)
class Point:
    """The incumbent of a method after some compute (examples trained, wall and CPU seconds)."""

    examples: int
    seconds: float
    cpu_seconds: float
    val_accuracy: float
    test_accuracy: float


@dataclass
class MethodRun:
    """One method on one dataset and seed: its points (compute increasing) and details."""

    method: str
    dataset: str
    seed: int
    points: list[Point]
    budget: int = 0  # example budget (0: the method sets its own compute)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Point:
        """The last point: the method's result at its total compute."""
        return self.points[-1]


def _point(reading: Reading, val_accuracy: float, test_accuracy: float) -> Point:
    return Point(
        reading.examples, reading.seconds, reading.cpu_seconds, val_accuracy, test_accuracy
    )


def run_autohas(config: SearchConfig, out_dir: str | None = None) -> MethodRun:
    """One AutoHAS run (mode from `config`), metered; `out_dir` None uses a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp, ComputeMeter() as meter:
        result = run_search(config, out_dir or tmp)
        reading = meter.read()
    info = {
        "search_examples": reading.by_model.get("SuperNet", 0),
        "retrain_examples": reading.by_model.get("ChildNet", 0),
        "forward_only_examples": reading.forward_only,
        **{
            k: result[k]
            for k in ("search_seconds", "retrain_seconds", "search_steps", "retrain_steps")
        },
        **{k: result[k] for k in ("stop_reason", "params", "architecture", "hyperparameters")},
    }
    point = _point(reading, math.nan, float(result["test_accuracy"]))
    return MethodRun(f"autohas-{config.mode}", config.dataset, config.seed, [point], info=info)


@dataclass(frozen=True)
class TrialSettings:
    """How every baseline trial trains (the same recipe AutoHAS retrains its derived model with)."""

    steps: int
    batch_size: int
    grad_clip: float

    @classmethod
    def like(cls, config: SearchConfig) -> TrialSettings:
        """Trials as long as AutoHAS's retraining under `config`."""
        return cls(config.retrain_steps, config.batch_size, config.grad_clip)


Proposer = Callable[[], tuple[Config | None, Callable[[TrialOutcome | None], None]]]


def _run_trials(
    method: str,
    data: Dataset,
    space: JointSpace,
    seed: int,
    budget: int,
    settings: TrialSettings,
    propose: Proposer,
) -> MethodRun:
    """Train proposed configurations until `budget` examples are used; record the incumbent after each.

    `propose()` returns a configuration (None: infeasible, skipped at no compute) and a callback that
    receives the outcome (None for an infeasible one).
    """
    points: list[Point] = []
    trials: list[dict[str, Any]] = []
    best: TrialOutcome | None = None
    rejected = streak = 0
    with ComputeMeter() as meter:
        while meter.read().examples < budget and streak < MAX_REJECTIONS:
            config, report = propose()
            if config is None:
                rejected, streak = rejected + 1, streak + 1
                report(None)
                continue
            streak = 0
            outcome = train_trial(
                space,
                data,
                config,
                settings.steps,
                settings.batch_size,
                settings.grad_clip,
                seed=seed * 100_003 + len(trials),
            )
            report(outcome)
            if (
                best is None or outcome.val_accuracy > best.val_accuracy
            ):  # ties keep the earlier one
                best = outcome
            points.append(_point(meter.read(), best.val_accuracy, best.test_accuracy))
            trials.append({"config": config, **outcome.__dict__})
    info = {"trials": trials, "rejected": rejected, "trial_steps": settings.steps}
    return MethodRun(method, data.name, seed, points, budget, info)


def run_random(
    data: Dataset, space: JointSpace, seed: int, budget: int, settings: TrialSettings
) -> MethodRun:
    """Random search: configurations drawn uniformly from the joint space (infeasible ones redrawn)."""
    draw = uniform_draw(random.Random(seed))

    def propose() -> tuple[Config | None, Callable[[TrialOutcome | None], None]]:
        config = space.sample(draw)
        return (config if space.feasible(config) else None), lambda outcome: None

    return _run_trials("random", data, space, seed, budget, settings, propose)


def suggest(trial: optuna.Trial, space: JointSpace) -> Config:
    """One configuration of the joint space from an Optuna trial (log scale for positive ranges)."""
    config: Config = {}
    for choice in space.space.choices:
        if choice.kind == CONTINUOUS:
            lo, hi = value_range(choice)
            config[choice.name] = trial.suggest_float(choice.name, lo, hi, log=lo > 0)
        else:
            config[choice.name] = trial.suggest_categorical(choice.name, list(choice.candidates))
    return config


def make_study(seed: int, startup_trials: int) -> optuna.Study:
    """A maximising in-memory study with a seeded TPE sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    return optuna.create_study(direction="maximize", sampler=sampler)


def run_tpe(
    data: Dataset,
    space: JointSpace,
    seed: int,
    budget: int,
    settings: TrialSettings,
    startup_trials: int,
) -> MethodRun:
    """Optuna TPE (ask/tell): maximises validation accuracy; infeasible trials are pruned at no compute."""
    study = make_study(seed, startup_trials)

    def propose() -> tuple[Config | None, Callable[[TrialOutcome | None], None]]:
        trial = study.ask()
        config = suggest(trial, space)

        def report(outcome: TrialOutcome | None) -> None:
            if outcome is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, outcome.val_accuracy)

        return (config if space.feasible(config) else None), report

    run = _run_trials("tpe", data, space, seed, budget, settings, propose)
    run.info.update(sampler=type(study.sampler).__name__, optuna_trials=len(study.trials))
    return run

"""Trial-based methods: random search, Optuna TPE, and TPE with Hyperband pruning.

A trial trains one configuration from scratch by the recipe on the training split; its validation
accuracy is what the method sees. Trials start while the search budget lasts (the last one may
overrun it by at most its own length). The incumbent is the completed trial with the best validation
accuracy (ties keep the earlier one); after each trial the curve gets a point with the incumbent's
test accuracy, measured with the meter paused (the method never sees it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch

from bench.suite.methods.base import Context, Outcome, Point
from bench.suite.recipe import StepHook, evaluate, fit, new_child
from bench.suite.space import Config, JointSpace, uniform_draw, value_range

#: consecutive infeasible proposals after which a method gives up (default spaces are ~80% feasible)
MAX_REJECTIONS = 1000
#: Hyperband: Optuna's default reduction factor; the smallest resource is 1/9 of a trial's steps
HYPERBAND_FACTOR = 3
HYPERBAND_RANGE = 9


class Pruned(Exception):
    """Raised from a training step to stop a trial its pruner gave up on."""


@dataclass
class Proposal:
    """One configuration to try (None: infeasible, skipped at no training cost) and its callbacks."""

    config: Config | None
    report: Callable[[int, float], bool] = lambda step, val: False  # True: prune now
    finish: Callable[[float | None], None] = lambda val: None  # None: pruned or infeasible


Proposer = Callable[[], Proposal]


@dataclass
class _Search:
    """A trial-based search in progress: the incumbent, its curve and the counts."""

    ctx: Context
    curve: list[Point] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # CPU seconds at which each trial began
    best: tuple[float, float, Config] | None = None  # (validation, test accuracy, configuration)
    rejected: int = 0
    pruned: int = 0

    def record(self, val: float, model: torch.nn.Module, config: Config) -> None:
        """A completed trial: a new incumbent if strictly better on validation; a curve point."""
        ctx = self.ctx
        if self.best is None or val > self.best[0]:
            with ctx.meter.paused():  # the judge's look at the test set
                self.best = (val, evaluate(model, ctx.data.x_test, ctx.data.y_test), config)
        self.curve.append(Point(ctx.meter.read(), self.best[0], self.best[1]))

    def outcome(self) -> Outcome:
        """The incumbent and the search's cost and curve."""
        if self.best is None:
            raise RuntimeError(f"no trial completed within {self.ctx.search_budget:.1f} CPU s")
        info = {"rejected": self.rejected, "pruned": self.pruned, "starts": self.starts}
        return Outcome(self.best[2], self.ctx.meter.read(), len(self.starts), self.curve, info)


def run_trials(ctx: Context, propose: Proposer, rungs: tuple[int, ...] = ()) -> Outcome:
    """Train proposals until the search budget is spent; `rungs`: steps that report to a pruner."""
    search, streak = _Search(ctx), 0
    while (began := ctx.meter.read().cpu) < ctx.search_budget and streak < MAX_REJECTIONS:
        proposal = propose()  # part of the trial: a sampler's proposal costs CPU too
        if proposal.config is None:
            search.rejected, streak = search.rejected + 1, streak + 1
            proposal.finish(None)
            continue
        streak = 0
        search.starts.append(math.floor(began * 1000) / 1000)  # ms, never after the budget
        done = _trial(ctx, proposal, proposal.config, len(search.starts) - 1, rungs)
        if done is None:
            search.pruned += 1
        else:
            search.record(*done, proposal.config)
    return search.outcome()


def _reporter(
    ctx: Context, model: torch.nn.Module, proposal: Proposal, rungs: tuple[int, ...]
) -> StepHook | None:
    """The training hook that reports validation accuracy at the rungs (None without rungs)."""
    if not rungs:
        return None

    def on_step(step: int, loss: float, lr: float) -> None:
        if step + 1 in rungs:
            val = evaluate(model, ctx.data.x_val, ctx.data.y_val)
            model.train()  # `evaluate` left it in eval mode; training goes on
            if proposal.report(step + 1, val):
                raise Pruned

    return on_step


def _trial(
    ctx: Context, proposal: Proposal, config: Config, index: int, rungs: tuple[int, ...]
) -> tuple[float, torch.nn.Module] | None:
    """Train one proposal on the training split: (validation accuracy, model), or None if pruned."""
    data, seed = ctx.data, ctx.trial_seed(index)
    model = new_child(ctx.space, config, data.x_train, data.family, seed)
    hook = _reporter(ctx, model, proposal, rungs)
    try:
        fit(model, ctx.space.split(config)[1], data.x_train, data.y_train, ctx.recipe, seed, hook)
    except Pruned:
        proposal.finish(None)
        return None
    val = evaluate(model, data.x_val, data.y_val)
    proposal.finish(val)
    return val, model


def random_search(ctx: Context) -> Outcome:
    """Random search: configurations drawn uniformly from the joint space, infeasible ones redrawn."""
    draw = uniform_draw(random.Random(ctx.seed))

    def propose() -> Proposal:
        config = ctx.space.sample(draw)
        return Proposal(config if ctx.space.feasible(config) else None)

    return run_trials(ctx, propose)


def suggest(trial: optuna.Trial, space: JointSpace) -> Config:
    """One configuration of the joint space from an Optuna trial (log scale for positive ranges)."""
    config: Config = {}
    for choice in space.space.choices:
        if choice.kind == "continuous":
            lo, hi = value_range(choice)
            config[choice.name] = trial.suggest_float(choice.name, lo, hi, log=lo > 0)
        else:
            config[choice.name] = trial.suggest_categorical(choice.name, list(choice.candidates))
    return config


def make_study(seed: int, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """A maximising in-memory study with Optuna's default TPE sampler, seeded."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)


def _optuna_proposer(study: optuna.Study, space: JointSpace) -> Proposer:
    """Ask/tell proposals; infeasible and pruned trials are told PRUNED."""

    def propose() -> Proposal:
        trial = study.ask()
        config = suggest(trial, space)

        def report(step: int, val: float) -> bool:
            trial.report(val, step)
            return trial.should_prune()

        def finish(val: float | None) -> None:
            if val is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, val)

        return Proposal(config if space.feasible(config) else None, report, finish)

    return propose


def tpe(ctx: Context) -> Outcome:
    """Optuna TPE with its default settings (10 random start-up trials), ask/tell."""
    study = make_study(ctx.seed)
    outcome = run_trials(ctx, _optuna_proposer(study, ctx.space))
    outcome.info["optuna_trials"] = len(study.trials)
    return outcome


def hyperband_rungs(steps: int) -> tuple[int, ...]:
    """The steps at which a trial reports: 1/9, 1/3 of its length (Hyperband's smaller resources)."""
    low = max(1, steps // HYPERBAND_RANGE)
    rungs, r = [], low
    while r < steps:
        rungs.append(r)
        r *= HYPERBAND_FACTOR
    return tuple(rungs)


def tpe_hyperband(ctx: Context) -> Outcome:
    """Optuna TPE with a Hyperband pruner over training steps (resources 1/9 .. 1 of a trial)."""
    steps = ctx.recipe.steps
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=max(1, steps // HYPERBAND_RANGE),
        max_resource=steps,
        reduction_factor=HYPERBAND_FACTOR,
    )
    study = make_study(ctx.seed, pruner)
    outcome = run_trials(ctx, _optuna_proposer(study, ctx.space), hyperband_rungs(steps))
    outcome.info["optuna_trials"] = len(study.trials)
    return outcome

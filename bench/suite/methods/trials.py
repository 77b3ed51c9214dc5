"""Trial-based methods: random search, Optuna TPE, and TPE with Hyperband pruning.

A trial trains one configuration from scratch by the recipe on the training split; its validation
accuracy is what the method sees. Trials start while the search budget lasts (the last one may
overrun it by at most its own length). The incumbent is the completed trial with the best validation
accuracy (ties keep the earlier one); after each trial the curve gets a point with the incumbent's
test accuracy, measured with the meter paused (the method never sees it).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from bench.suite.methods.base import Context, Outcome, Point
from bench.suite.recipe import evaluate, fit, new_child
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
class _Best:
    """The incumbent so far."""

    val: float
    test: float
    config: Config


def run_trials(ctx: Context, propose: Proposer, rungs: tuple[int, ...] = ()) -> Outcome:
    """Train proposals until the search budget is spent; `rungs`: steps that report to a pruner."""
    curve: list[Point] = []
    best: _Best | None = None
    starts: list[float] = []  # CPU seconds at which each trial began
    rejected = streak = pruned = 0
    while ctx.meter.read().cpu < ctx.search_budget and streak < MAX_REJECTIONS:
        proposal = propose()
        if proposal.config is None:
            rejected, streak = rejected + 1, streak + 1
            proposal.finish(None)
            continue
        streak = 0
        starts.append(round(ctx.meter.read().cpu, 3))
        done = _trial(ctx, proposal, len(starts) - 1, rungs)
        if done is None:
            pruned += 1
            continue
        val, model = done
        if best is None or val > best.val:
            with ctx.meter.paused():
                best = _Best(
                    val, evaluate(model, ctx.data.x_test, ctx.data.y_test), proposal.config
                )
        curve.append(Point(ctx.meter.read(), best.val, best.test))
    if best is None:
        raise RuntimeError(f"no trial completed within {ctx.search_budget:.1f} CPU s")
    info = {"rejected": rejected, "pruned": pruned, "starts": starts}
    return Outcome(best.config, ctx.meter.read(), len(starts), curve, info)


def _trial(
    ctx: Context, proposal: Proposal, index: int, rungs: tuple[int, ...]
) -> tuple[float, torch.nn.Module] | None:
    """Train one proposal on the training split: (validation accuracy, model), or None if pruned."""
    data, config = ctx.data, proposal.config
    assert config is not None
    seed = ctx.trial_seed(index)
    model = new_child(ctx.space, config, data.x_train, data.family, seed)

    def on_step(step: int, loss: float, lr: float) -> None:
        if step + 1 in rungs:
            val = evaluate(model, data.x_val, data.y_val)
            model.train()  # `evaluate` left it in eval mode; training goes on
            if proposal.report(step + 1, val):
                raise Pruned

    hparams = ctx.space.split(config)[1]
    try:
        fit(
            model, hparams, data.x_train, data.y_train, ctx.recipe, seed, on_step if rungs else None
        )
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

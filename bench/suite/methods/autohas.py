"""AutoHAS through `run_search`: joint (differentiable, REINFORCE), NAS-only, HPO-only, NAS-then-HPO.

Each runs the engine with its defaults except the step budget (sized from measured step costs so
that the search fits the method's search budget), `retrain_steps=0` (the suite retrains the
derived model like every other incumbent), a training race one recipe trial long inside
`RACE_SHARE` of the budget (`race_plan`) and the CPU device; the derived architecture and
hyper-parameters from result.json are the incumbent. The whole `run_search` call is counted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.suite.api import Choice, SearchConfig, SearchSpace, run_search
from bench.suite.meter import cpu_seconds
from bench.suite.methods.base import Context, Outcome, StepCosts
from bench.suite.space import Config, JointSpace

Progress = Callable[[Any], None]
#: the largest share of a stage's budget the engine's training race may take
RACE_SHARE = 0.4
#: variants whose step costs are measured per task: "mode/strategy"
VARIANTS = ("joint/differentiable", "joint/reinforce", "nas/differentiable", "hpo/differentiable")


def search_config(
    npz: Path,
    mode: str,
    strategy: str,
    steps: int,
    seed: int,
    space: SearchSpace | None = None,
    max_seconds: float = 0.0,
    race_steps: int = 0,
    race_seconds: float = 0.0,
) -> SearchConfig:
    """The engine's default config for `mode`/`strategy`, with the suite's step budget and, as a
    hard cap, a time budget (`max_seconds`, 0: none); no plot (it would be counted). The engine's
    training race (its automatic length follows `retrain_steps`, 0 here) is `race_steps` long, all
    of it within `race_seconds` (0: no limit)."""
    return SearchConfig(
        dataset=str(npz),
        mode=mode,
        strategy=strategy,
        steps=steps,
        retrain_steps=0,
        seed=seed,
        device="cpu",
        space=space,
        max_search_seconds=max_seconds,
        race_steps=race_steps,
        max_race_seconds=race_seconds,
        plot=False,
    )


def race_plan(
    ctx: Context, mode: str, budget: float, space: SearchSpace | None
) -> tuple[int, float]:
    """The training race of a stage of `budget` CPU seconds: (steps per race training, seconds
    for the whole race). Each race training is one trial of the recipe (the length the judge
    retrains for) where `RACE_SHARE` of the budget allows; the engine times the derived model's
    steps and shortens the trainings to fit, or skips the race when not even its minimum fits."""
    hparams = {c.name: c for c in (space or ctx.space.space).hparams}
    optimizers, rates = hparams["optimizer"].candidates, hparams["learning_rate"].candidates
    if mode == "nas" or len(optimizers) * len(rates) < 2:  # one optimizer and one rate: no race
        return 0, 0.0
    return ctx.recipe.steps, RACE_SHARE * budget


def search(config: SearchConfig, on_progress: Progress | None = None) -> dict[str, Any]:
    """One `run_search` into a temporary run directory; result.json's content."""
    with tempfile.TemporaryDirectory(prefix="suite-") as out:
        return run_search(config, out, on_progress)


def probe_costs(npz: Path, variant: str, steps: int = 40) -> tuple[StepCosts, dict[str, Any]]:
    """Measure one variant's step costs with a short search (seed 0) on the task; also the space
    the engine searched (result.json's `space`: its default space without dead candidates).

    40 steps: long enough that the differentiable search's windows (7 steps here) are near their
    default length, so the encoding updates' cost is amortised as in a real search.

    Step k's cost is the CPU time between the progress events of steps k-1 and k; the first warm-up
    and the first alternating step are left out (they pay one-off initialisation), and everything
    else the call costs (loading, building, writing the run directory) is the fixed overhead.
    """
    mode, strategy = variant.split("/")
    marks: list[float] = []

    def on_progress(event: Any) -> None:
        if event.stage == "search":
            marks.append(cpu_seconds())

    start = cpu_seconds()
    try:
        result = search(search_config(npz, mode, strategy, steps, 0), on_progress)
    except ValueError as exc:  # the engine refuses this variant on this task
        return StepCosts(0.0, 0.0, 0.0, error=str(exc)), {}
    return step_costs(marks, cpu_seconds() - start), result["space"]


def step_costs(marks: list[float], total: float) -> StepCosts:
    """Costs from the CPU clock at every step's progress event and the whole call's CPU seconds."""
    warm = int(len(marks) * SearchConfig().warmup_fraction)
    diffs = np.diff(marks)  # diffs[i]: the cost of step i + 2
    alternate = float(np.median(diffs[warm:])) if len(diffs) > warm else float(np.max(diffs))
    warmup = float(np.median(diffs[: warm - 1])) if warm >= 2 else alternate
    overhead = total - warm * warmup - (len(marks) - warm) * alternate
    return StepCosts(warmup, alternate, max(0.0, overhead))


def _stage(
    ctx: Context, variant: str, budget: float, space: SearchSpace | None = None, costs: str = ""
) -> dict[str, Any]:
    """One `run_search` sized to `budget` CPU seconds: result.json plus how it was sized.

    The probe's step costs are scaled by `ctx.cost_factor` (how much dearer recent AutoHAS runs were
    than their estimates: CPU time per step drifts with what else runs on the machine)."""
    step_costs, warmup = ctx.step_costs[costs or variant], SearchConfig().warmup_fraction
    mode, strategy = variant.split("/")
    race_steps, race_seconds = race_plan(ctx, mode, budget, space)
    steps = step_costs.steps_for((budget - race_seconds) / ctx.cost_factor, warmup)
    # the engine's own time budgets cap the loop and the race: wall seconds >= CPU seconds at one
    # thread, so a search that runs dearer than estimated still stops inside its CPU budget
    cap = max(1e-3, budget - step_costs.overhead - race_seconds)
    start = ctx.meter.read().cpu
    race = (race_steps, race_seconds)
    result = search(search_config(ctx.npz, mode, strategy, steps, ctx.seed, space, cap, *race))
    ran = int(result["search_steps"])
    sizing = {
        "planned_steps": steps,
        "race_steps": result["race"]["steps"],
        # of the steps that ran (a time cap may stop the loop early), plus the race as it ran:
        # what `cost_factor` compares the actual cost with
        "estimated_cpu": round(
            step_costs.estimate_run(steps, ran, warmup) + float(result["race_seconds"]), 3
        ),
        "actual_cpu": round(ctx.meter.read().cpu - start, 3),
        "cost_factor": round(ctx.cost_factor, 3),
    }
    return {"result": result, "sizing": sizing}


def _incumbent(space: JointSpace, result: dict[str, Any]) -> Config:
    return space.join(result["architecture"], result["hyperparameters"])


def _info(stage: dict[str, Any]) -> dict[str, Any]:
    result = stage["result"]
    keys = (
        "search_steps",
        "stop_reason",
        "search_seconds",
        "race_seconds",
        "race",
        "mode",
        "strategy",
        "torch_threads",
    )
    found = {k: result[k] for k in keys if k in result}
    return {**stage["sizing"], **found, "space": result["space"]}


def _run(ctx: Context, mode: str, strategy: str) -> Outcome:
    stage = _stage(ctx, f"{mode}/{strategy}", ctx.search_budget)
    incumbent = _incumbent(ctx.space, stage["result"])
    return Outcome(incumbent, ctx.meter.read(), info=_info(stage))


def joint(ctx: Context) -> Outcome:
    """AutoHAS joint search, differentiable strategy (the default)."""
    return _run(ctx, "joint", "differentiable")


def joint_reinforce(ctx: Context) -> Outcome:
    """AutoHAS joint search, REINFORCE controller strategy."""
    return _run(ctx, "joint", "reinforce")


def nas_only(ctx: Context) -> Outcome:
    """AutoHAS with the hyper-parameters fixed to the engine's hand-picked defaults (mode nas)."""
    return _run(ctx, "nas", "differentiable")


def hpo_only(ctx: Context) -> Outcome:
    """AutoHAS with the architecture fixed to the engine's default one (mode hpo)."""
    return _run(ctx, "hpo", "differentiable")


def fixed_arch_space(space: JointSpace, arch: Config) -> SearchSpace:
    """The joint space's hyper-parameters over one architecture (one candidate per choice).

    A skipped block keeps a one-candidate ("skip",) depth choice: the derived model skips it, but
    the engine's SuperModel treats a depth choice's first candidate as "keep", so this stage's
    SuperModel still runs that block (reported upstream; it only affects which HPs look best)."""
    choices = tuple(Choice(c.name, (arch[c.name],)) for c in space.space.arch if c.name in arch)
    return SearchSpace(choices, space.space.hparams)


def nas_then_hpo(ctx: Context) -> Outcome:
    """Two stages, half the search budget each: NAS-only, then HPO over the architecture it found."""
    first = _stage(ctx, "nas/differentiable", ctx.search_budget / 2)
    arch = _incumbent(ctx.space, first["result"])
    left = ctx.search_budget - ctx.meter.read().cpu
    # sized with the default HPO variant's step costs; where the engine refuses that variant (its
    # fixed architecture too large), with the joint search's, whose SuperModel is the larger
    costs = "joint/differentiable" if ctx.step_costs["hpo/differentiable"].error else ""
    space = fixed_arch_space(ctx.space, arch)
    second = _stage(ctx, "hpo/differentiable", left, space, costs)
    incumbent = ctx.space.join(ctx.space.split(arch)[0], second["result"]["hyperparameters"])
    info = {"nas": _info(first), "hpo": _info(second)}
    return Outcome(incumbent, ctx.meter.read(), info=info)

"""The section's text: what was run and how it is counted, then the tables, verdicts and plots."""

from __future__ import annotations

from pathlib import Path

from bench.suite import report
from bench.suite.figures import TARGETS, Table
from bench.suite.methods.autohas import RACE_SHARE
from bench.suite.methods.sharing import TRAIN_FRACTION
from bench.suite.presets import TRIAL_STEPS, Preset
from bench.suite.runner import plan
from bench.suite.store import Results


def protocol(preset: Preset, threads: int) -> str:
    """How the run is set up and counted (true of every run of the preset)."""
    head = (
        f"Preset `{preset.name}`: tasks {', '.join(preset.tasks)}; methods "
        f"{', '.join(preset.methods)}; seeds {list(preset.seeds)}."
    )
    return "\n\n".join([head, _recipe(preset), _budget(preset, threads), _selection()])


def _recipe(preset: Preset) -> str:
    recipe = preset.recipe
    return (
        "**One recipe.** Every model the suite trains (each trial, each of the "
        f"{preset.spread_configs} random configurations of the spread, each final retraining) runs "
        f"{recipe.steps} steps of the engine's own `retrain` at batch {recipe.batch_size} (gradient "
        f"clip {recipe.grad_clip:g}): the engine's retraining recipe and default batch size. "
        f"{TRIAL_STEPS} steps is the shortest length at which a median random configuration trains "
        "on every task (6 random configurations per task: at 30 steps most are still near chance on "
        "digits and MNIST-1D, 12-45% test accuracy; at 40, 57-89%; at 60, 80-99%); it is short "
        "because the full preset must fit 5 tasks x 9 methods x 5 seeds x >= 30 trials on one core. "
        "So every model here is trained briefly, the same for all methods."
    )


def _budget(preset: Preset, threads: int) -> str:
    ladder = ", ".join(f"{f:g}" for f in preset.ladder)
    return (
        "**One budget.** A task's *trial cost* is the mean CPU seconds of the spread's trainings; "
        f"every (task, method, seed) gets {preset.budget_trials:g} trial costs of device-seconds for "
        "its search and the final retraining of its incumbent together"
        + (f", and AutoHAS also runs at {ladder} of that budget" if ladder else "")
        + ". Device-seconds are this process's CPU seconds (user + system, all threads) with torch "
        f"threads = {threads}, one method at a time; wall seconds are recorded beside them. The "
        "search may use the budget less one trial cost (kept for the retraining): trial-based "
        "methods start trials while it lasts; AutoHAS gives "
        f"{RACE_SHARE:.0%} of it to the engine's training race (race trainings one trial long, "
        "shortened by the engine to fit, skipped under 10 steps) and the rest to the search loop, "
        "whose step count is the largest whose cost, "
        "estimated from a 40-step probe per variant and task and scaled by how much dearer the last "
        "AutoHAS runs were than estimated, fits it (its whole `run_search` call is counted, engine "
        "defaults otherwise, `retrain_steps=0`); the weight-sharing control trains the SuperModel on "
        f"random sub-models for {TRAIN_FRACTION:.0%} of it and ranks random architectures for the "
        "rest. CPU time per step drifts with the machine's load, so AutoHAS's actual cost can miss "
        "the plan either way: every figure uses the measured cost. Test evaluations and latency "
        "measurements are not counted."
    )


def _selection() -> str:
    return (
        "**One space, one selection.** Every method searches the joint space AutoHAS's joint search "
        "reports it searched (the engine's default joint space of the task, less candidates the "
        "engine drops as dead on its input shape); NAS-only, HPO-only, the two-stage method and the "
        "weight-sharing control search their parts of it, the other parts fixed to the engine's "
        "defaults. Each incumbent is chosen on the validation split (10% of the training data, drawn "
        "with the seed: the split AutoHAS uses), then retrained on train+val with the same seed for "
        "every method and tested once. Intervals: 95% percentile bootstrap over seeds. TPE: Optuna's "
        "`TPESampler(seed=seed)` (10 random start-up trials); TPE + Hyperband: the same with "
        "`HyperbandPruner` over training steps (1/9 .. 1 of a trial, factor 3)."
    )


def run_line(preset: Preset, results: Results) -> str:
    """How far the results file is, and what its runs cost (summed over resumed invocations)."""
    done, total = len([c for c in plan(preset) if c.key in results.cells]), len(plan(preset))
    records = [*results.calibrations.values(), *results.cells.values()]
    cpu = sum(r.get("total", r.get("cost", {})).get("cpu", 0.0) for r in records)
    wall = sum(r.get("total", r.get("cost", {})).get("wall", 0.0) for r in records)
    loads = [r["load"] for r in records if "load" in r]
    load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"
    return (
        f"Cells finished: {done} / {total}. Calibrations and cells together: {cpu / 60:.1f} CPU "
        f"minutes, {wall / 60:.1f} wall-clock minutes; 1-minute load average when a record was "
        f"written: {load} (2 cores: above 1, other jobs shared the machine)."
    )


def task_part(table: Table, task: str, methods: list[str]) -> str:
    """One task's tables."""
    return "\n\n".join([
        f"### {task}",
        report.method_table(table, task, methods),
        "Compute to reach a target: median over seeds of the method's device-seconds to first reach "
        f"{' / '.join(TARGETS)}'s final test accuracy on the same seed, divided by AutoHAS's "
        "(> 1: AutoHAS needs that many times less; 0: only the method reached it; ∞: only AutoHAS "
        "did; —: neither), 95% interval, seeds on which the method reached it:",
        report.reach_table(table, task, methods),
    ])  # fmt: skip


def body(
    preset: Preset,
    results: Results,
    table: Table,
    tasks: list[str],
    methods: list[str],
    plots: dict[str, Path],
    notes: Path,
) -> str:
    """The whole section body."""
    threads = (results.header or {}).get("settings", {}).get("threads", 1)
    parts = [protocol(preset, threads), run_line(preset, results)]
    parts += ["### Tasks", report.tasks_table(preset, results.calibrations)]
    parts += [task_part(table, task, methods) for task in tasks]
    parts += ["### Verdicts", "\n".join(report.verdicts(table, t, methods) for t in tasks)]
    parts += [f"![{kind}]({path.name})" for kind, path in plots.items() if path.exists()]
    if notes.exists():
        parts.append(notes.read_text().strip())
    return "\n\n".join(parts) + "\n"

"""The section's text: what was run and how it is counted, then the tables, verdicts and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.suite import report
from bench.suite.figures import TARGETS, Table
from bench.suite.methods.sharing import TRAIN_FRACTION
from bench.suite.presets import TRIAL_STEPS, Preset
from bench.suite.runner import plan
from bench.suite.store import Results


def protocol(preset: Preset, threads: int) -> str:
    """How the run is set up and counted (true of every run of the preset)."""
    recipe = preset.recipe
    ladder = ", ".join(f"{f:g}" for f in preset.ladder)
    return (
        f"Preset `{preset.name}`: tasks {', '.join(preset.tasks)}; methods "
        f"{', '.join(preset.methods)}; seeds {list(preset.seeds)}.\n\n"
        f"**One recipe.** Every model the suite trains (each trial, each of the "
        f"{preset.spread_configs} random configurations of the spread, each final retraining) runs "
        f"{recipe.steps} steps of the engine's own `retrain` at batch {recipe.batch_size} (gradient clip "
        f"{recipe.grad_clip:g}): the engine's retraining recipe and default batch size. "
        f"{TRIAL_STEPS} steps is the shortest length at which a median random configuration trains "
        "on every task (6 random configurations per task: at 30 steps most are still near chance on "
        "digits and MNIST-1D, 12-45% test accuracy; at 40, 57-89%; at 60, 80-99%); it is short "
        "because the full preset must fit 5 tasks x 9 methods x 5 seeds x >= 30 trials on one core. "
        "So every model here is trained briefly, the same for all methods.\n\n"
        f"**One budget.** A task's *trial cost* is the mean CPU seconds of the spread's trainings; "
        f"every (task, method, seed) gets {preset.budget_trials:g} trial costs of device-seconds for "
        "its search and the final retraining of its incumbent together"
        + (f", and AutoHAS also runs at {ladder} of that budget" if ladder else "")
        + ". Device-seconds are this process's CPU seconds (user + system, all threads) with torch "
        f"threads = {threads}, one method at a time; wall seconds are recorded beside them. "
        "Trial-based methods start a trial while more than one trial cost of the budget is left; "
        "AutoHAS's step budget is sized from its measured step costs (an 8-step probe per variant and "
        "task), its whole `run_search` call is counted, with the engine's defaults otherwise and "
        "`retrain_steps=0`; the weight-sharing control trains the SuperModel on random sub-models for "
        f"{TRAIN_FRACTION:.0%} of its search budget and ranks random architectures for the rest. "
        "Test evaluations and latency measurements are not counted.\n\n"
        "**One space, one selection.** Every method searches the engine's default joint space of the "
        "task (NAS-only, HPO-only, the two-stage method and the weight-sharing control search their "
        "parts of it, the other parts fixed to the engine's defaults). Each incumbent is chosen on the "
        "validation split (10% of the training data, drawn with the seed: the split AutoHAS uses), "
        "then retrained on train+val with the same seed for every method and tested once. Intervals: "
        "95% percentile bootstrap over seeds. TPE: Optuna's `TPESampler(seed=seed)` (10 random "
        "start-up trials); TPE + Hyperband: the same with `HyperbandPruner` over training steps "
        "(1/9 .. 1 of a trial, factor 3)."
    )


def run_line(preset: Preset, results: Results, run: dict[str, Any]) -> str:
    """How far the results file is, and what this invocation cost."""
    done, total = len(list(c for c in plan(preset) if c.key in results.cells)), len(plan(preset))
    cpu = sum(r.get("total", {}).get("cpu", 0.0) for r in results.cells.values())
    lo, hi = run["load"]
    return (
        f"Cells finished: {done} / {total} (sum of their CPU seconds: {cpu / 60:.1f} min). This "
        f"invocation: {run['minutes']:.1f} min wall-clock; 1-minute load average {lo:.1f} at the "
        f"start, {hi:.1f} at the end (2 cores: above 1, other jobs shared the machine)."
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
    run: dict[str, Any],
    plots: dict[str, Path],
    notes: Path,
) -> str:
    """The whole section body."""
    threads = (results.header or {}).get("settings", {}).get("threads", 1)
    parts = [protocol(preset, threads), run_line(preset, results, run)]
    parts += ["### Tasks", report.tasks_table(preset, results.calibrations)]
    parts += [task_part(table, task, methods) for task in tasks]
    parts += ["### Verdicts", "\n".join(report.verdicts(table, t, methods) for t in tasks)]
    parts += [f"![{kind}]({path.name})" for kind, path in plots.items() if path.exists()]
    if notes.exists():
        parts.append(notes.read_text().strip())
    return "\n\n".join(parts) + "\n"

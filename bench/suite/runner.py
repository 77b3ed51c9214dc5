"""The plan and its execution: calibrate every task, then run every missing cell, one at a time.

A cell is one (task, method, seed, budget fraction). Cells run in seed order (all tasks and methods
of seed 0 first), so a partial run already covers every task. Each finished cell is appended to the
results file at once; a rerun skips what is there.
"""

from __future__ import annotations

import datetime as _dt
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.suite import store
from bench.suite.api import load_dataset, measure_latency_ms
from bench.suite.calibrate import Calibration, calibrate, reprobe
from bench.suite.meter import Meter
from bench.suite.methods import METHODS, TRIAL_METHODS
from bench.suite.methods.base import Context, Outcome, Unavailable
from bench.suite.presets import Preset
from bench.suite.recipe import evaluate, final_model
from bench.suite.space import JointSpace
from bench.suite.tasks import task_path

#: the final retraining's seed is this + the cell's seed, the same for every method
FINAL_SEED = 10_000


@dataclass(frozen=True)
class Cell:
    """One unit of the plan."""

    task: str
    method: str
    seed: int
    fraction: float = 1.0

    @property
    def key(self) -> store.CellKey:
        """Its key in the results file."""
        return self.task, self.method, self.seed, float(self.fraction)


def plan(preset: Preset) -> list[Cell]:
    """Every cell of the preset: seeds outermost; AutoHAS also at the ladder's smaller budgets."""
    cells = []
    for seed in preset.seeds:
        for task in preset.tasks:
            for method in preset.methods:
                cells.append(Cell(task, method, seed))
                if method == "autohas":
                    cells += [Cell(task, method, seed, f) for f in preset.ladder]
    return cells


def run_cell(
    cell: Cell, calibration: Calibration, preset: Preset, cost_factor: float = 1.0
) -> dict[str, Any]:
    """Run one method under its budget, retrain its incumbent, measure it; the cell record."""
    npz = task_path(cell.task)
    data = load_dataset(str(npz), seed=cell.seed)  # the validation split AutoHAS uses too
    space, recipe = JointSpace.for_data(data, calibration.search_space), preset.recipe
    budget = preset.budget_trials * calibration.trial_cpu * cell.fraction
    ctx = Context(
        cell.task, npz, data, space, recipe, cell.seed, budget, calibration.trial_cpu,
        calibration.step_costs, cost_factor,
    )  # fmt: skip
    try:
        outcome = METHODS[cell.method](ctx)
    except Unavailable as exc:
        return {**_key(cell), "error": str(exc), "budget_cpu": round(ctx.budget, 3)}
    model = final_model(space, data, outcome.config, recipe, FINAL_SEED + cell.seed)
    total = ctx.meter.read()  # search + final retraining; what follows is the judge's
    return _record(cell, ctx, outcome, total, _measure(ctx, model, outcome.config))


def _measure(ctx: Context, model: torch.nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """The final model's test accuracy, size and measured latency."""
    args, data = ctx.space.model_args(config), ctx.data
    return {
        "test_accuracy": evaluate(model, data.x_test, data.y_test),
        "params": ctx.space.params(config),
        "latency_ms": measure_latency_ms(args),
    }


def _key(cell: Cell) -> dict[str, Any]:
    return {"task": cell.task, "method": cell.method, "seed": cell.seed, "fraction": cell.fraction}


def _record(
    cell: Cell, ctx: Context, outcome: Outcome, total: Any, measured: dict[str, Any]
) -> dict[str, Any]:
    return {
        **_key(cell),
        "budget_cpu": round(ctx.budget, 3),
        "search": outcome.search.to_json(),
        "total": total.to_json(),
        "trials": outcome.trials,
        "curve": [p.to_json() for p in outcome.curve],
        "config": outcome.config,
        "in_space": ctx.space.contains(outcome.config) and ctx.space.feasible(outcome.config),
        **measured,
        "info": outcome.info,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


Runner = Callable[[Cell, Calibration, Preset, float], dict[str, Any]]
#: how many recent AutoHAS runs set the cost factor, and its bounds
RECENT_RUNS, FACTOR_BOUNDS = 4, (0.5, 2.0)


def cost_factor(records: list[dict[str, Any]]) -> float:
    """Median of actual / estimated search cost over the last AutoHAS runs (1 before any)."""
    ratios = []
    for record in records:
        info = record.get("info", {})
        for stage in (info, *(v for v in info.values() if isinstance(v, dict))):
            if stage.get("estimated_cpu", 0) > 0:
                ratios.append(stage["actual_cpu"] / stage["estimated_cpu"])
    recent = ratios[-RECENT_RUNS:]
    if not recent:
        return 1.0
    return min(max(float(statistics.median(recent)), FACTOR_BOUNDS[0]), FACTOR_BOUNDS[1])


def execute(
    preset: Preset,
    path: Path,
    threads: int,
    restart: bool = False,
    runner: Runner = run_cell,
    rerun: tuple[str, ...] = (),
) -> store.Results:
    """Calibrate the missing tasks and run the missing cells, with one progress bar over the plan.

    `rerun`: methods whose cells are dropped and run again (after a change to them), under the
    current settings; with an AutoHAS method among them, the step costs are probed again.
    """
    torch.set_num_threads(threads)
    if rerun:
        _retract(path, preset.settings(threads), set(rerun))
    results = store.open_results(path, preset.settings(threads), restart)
    cells = plan(preset)
    missing = [c for c in cells if c.key not in results.cells]
    todo = [t for t in preset.tasks if t not in results.calibrations]
    with tqdm(total=len(cells) + len(preset.tasks), desc=f"suite {preset.name}") as bar:
        bar.update(len(preset.tasks) - len(todo) + len(cells) - len(missing))
        for task in todo:
            bar.set_postfix_str(f"{task} calibration")
            _calibrate(preset, task, path, results)
            bar.update()
        for cell in missing:
            bar.set_postfix_str(f"{cell.task} {cell.method} seed {cell.seed} x{cell.fraction:.3g}")
            calibration = Calibration.from_json(results.calibrations[cell.task])
            record = runner(cell, calibration, preset, cost_factor(list(results.cells.values())))
            store.append(path, "cell", record)
            results.cells[cell.key] = record
            bar.update()
    return results


def _retract(path: Path, settings: dict[str, Any], methods: set[str]) -> None:
    """Drop the cells of `methods` (and re-probe AutoHAS's step costs when one of them is not a
    trial method: it runs the engine)."""
    unknown = sorted(methods - set(METHODS))
    if unknown:
        raise SystemExit(f"--rerun: unknown methods {unknown}; known: {sorted(METHODS)}")
    results = store.load(path)
    store.check_machine(path, results, store.this_machine())
    results = store.retract(results, methods, settings)
    if methods - set(TRIAL_METHODS):
        for task, record in list(results.calibrations.items()):
            results.calibrations[task] = reprobe(record, task_path(task))
    store.rewrite(path, results)


def _calibrate(preset: Preset, task: str, path: Path, results: store.Results) -> None:
    npz, meter = task_path(task), Meter()
    data = load_dataset(str(npz), seed=0)
    record = calibrate(task, npz, data, preset.recipe, preset.spread_configs).to_json()
    record["cost"], record["load"] = meter.read().to_json(), os.getloadavg()[0]
    store.append(path, "calibration", record)
    results.calibrations[task] = record


def completed(preset: Preset, results: store.Results) -> Iterator[dict[str, Any]]:
    """The preset's cells that are in the results, in plan order."""
    return (results.cells[c.key] for c in plan(preset) if c.key in results.cells)

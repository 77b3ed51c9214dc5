"""Aggregation over seeds and the Markdown report (tables only; the plot is in `plot.py`).

Conventions: C is AutoHAS joint's measured compute on the same dataset and seed; a baseline's
accuracy "at k C" is the test accuracy of its incumbent (best validation accuracy among the trials
finished within k C examples); "compute to reach" is the first compute at which a method's incumbent
test accuracy is at least AutoHAS joint's final test accuracy on the same seed, as a multiple of C.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from bench.compare.harness import METHODS, Preset
from bench.compare.methods import MethodRun, Point
from bench.results import markdown_table

#: compute multiples (of AutoHAS joint's compute) at which the curves are tabulated, up to the budget
MULTIPLES = (0.5, 1.0, 2.0, 3.0, 4.0)


def multiples(budget_factor: float) -> list[float]:
    """The tabulated multiples of C within the budget, ending at the budget itself."""
    return sorted({*(k for k in MULTIPLES if k < budget_factor), budget_factor})


def by_key(runs: Iterable[MethodRun]) -> dict[tuple[str, str, int], MethodRun]:
    """(dataset, method, seed) -> run."""
    return {(r.dataset, r.method, r.seed): r for r in runs}


def at_compute(run: MethodRun, amount: float, unit: str = "examples") -> Point | None:
    """The method's incumbent once at most `amount` of `unit` (a `Point` field) was used (None: no
    model yet)."""
    done = [p for p in run.points if getattr(p, unit) <= amount]
    return done[-1] if done else None


def first_reaching(run: MethodRun, accuracy: float) -> Point | None:
    """The first point whose test accuracy is at least `accuracy` (None: never within its budget)."""
    return next((p for p in run.points if p.test_accuracy >= accuracy), None)


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± sd' (sample sd; just the mean for one value; '—' for none)."""
    values = [v * scale for v in values if not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def reach_summary(ratios: list[float | None], budget_factor: float) -> str:
    """Geometric mean of the compute ratios over the seeds that reached, with the count."""
    reached = [r for r in ratios if r is not None]
    if not reached:
        return f"not reached within budget ({budget_factor:g} C)"
    gmean = math.exp(statistics.mean(math.log(max(r, 1e-9)) for r in reached))
    span = f", {min(reached):.2f}–{max(reached):.2f}" if len(reached) > 1 else ""
    return f"{gmean:.2f} C ({len(reached)}/{len(ratios)} seeds{span})"


def _ratios(
    runs: dict, dataset: str, method: str, seeds: tuple[int, ...], unit: str
) -> list[float | None]:
    out: list[float | None] = []
    for seed in seeds:
        joint, run = runs[(dataset, "autohas-joint", seed)].final, runs[(dataset, method, seed)]
        hit = first_reaching(run, joint.test_accuracy)
        out.append(None if hit is None else getattr(hit, unit) / max(getattr(joint, unit), 1e-9))
    return out


def accuracy_table(runs: dict, preset: Preset, dataset: str) -> str:
    """Per method: compute, time, final accuracy, accuracy at C, compute to reach AutoHAS joint."""
    rows = [_accuracy_row(runs, preset, dataset, method) for method in METHODS]
    headers = [
        "method",
        "compute (k examples)",
        "wall s",
        "CPU s",
        "final test acc %",
        "test acc % at C",
        "to reach joint's acc: examples",
        "wall s",
        "CPU s",
    ]
    return markdown_table(headers, rows)


def _accuracy_row(runs: dict, preset: Preset, dataset: str, method: str) -> list[object]:
    own = [runs[(dataset, method, s)] for s in preset.seeds]
    at_c = [at_compute(r, runs[(dataset, "autohas-joint", r.seed)].final.examples) for r in own]
    missing = "" if all(at_c) else f" ({sum(map(bool, at_c))}/{len(at_c)} had a model)"
    reach = [
        "—"
        if method == "autohas-joint"
        else reach_summary(_ratios(runs, dataset, method, preset.seeds, unit), preset.budget_factor)
        for unit in ("examples", "seconds", "cpu_seconds")
    ]
    return [
        method,
        mean_sd([r.final.examples for r in own], 1e-3, 0),
        mean_sd([r.final.seconds for r in own], 1.0, 0),
        mean_sd([r.final.cpu_seconds for r in own], 1.0, 0),
        mean_sd([r.final.test_accuracy for r in own]),
        mean_sd([p.test_accuracy if p else math.nan for p in at_c]) + missing,
        *reach,
    ]


def curve_table(runs: dict, preset: Preset, dataset: str) -> str:
    """Baselines' incumbent test accuracy at multiples of C (mean ± sd over seeds; — before any trial)."""
    rows = []
    for method in ("random", "tpe"):
        row: list[object] = [method]
        for k in multiples(preset.budget_factor):
            points = [
                at_compute(
                    runs[(dataset, method, s)],
                    k * runs[(dataset, "autohas-joint", s)].final.examples,
                )
                for s in preset.seeds
            ]
            cell = mean_sd([p.test_accuracy if p else math.nan for p in points])
            missing = sum(p is None for p in points)
            row.append(cell + (f" ({len(points) - missing}/{len(points)})" if missing else ""))
        trials = [len(runs[(dataset, method, s)].points) for s in preset.seeds]
        row.append(f"{min(trials)}–{max(trials)}" if min(trials) != max(trials) else str(trials[0]))
        rows.append(row)
    headers = ["method", *[f"at {k:g} C" for k in multiples(preset.budget_factor)], "trials"]
    return markdown_table(headers, rows)


def cost_table(runs: dict, preset: Preset, dataset: str) -> str:
    """AutoHAS search cost relative to training its derived model once, per mode."""
    rows = []
    for method in METHODS[:3]:
        info = [runs[(dataset, method, s)].info for s in preset.seeds]
        rows.append(
            [
                method,
                mean_sd([i["search_examples"] for i in info], 1e-3, 0),
                mean_sd([i["retrain_examples"] for i in info], 1e-3, 0),
                mean_sd([i["search_examples"] / i["retrain_examples"] for i in info], 1.0, 2),
                mean_sd([i["search_seconds"] for i in info], 1.0, 0),
                mean_sd([i["retrain_seconds"] for i in info], 1.0, 0),
                mean_sd([i["search_seconds"] / i["retrain_seconds"] for i in info], 1.0, 2),
            ]
        )
    headers = [
        "mode",
        "search (k ex.)",
        "retrain (k ex.)",
        "search / retrain (ex.)",
        "search s",
        "retrain s",
        "search / retrain (s)",
    ]
    return markdown_table(headers, rows)


def derived_lines(runs: dict, preset: Preset, dataset: str) -> str:
    """One line per seed: what AutoHAS joint derived, and the baselines' selected configurations."""
    lines = []
    for seed in preset.seeds:
        info = runs[(dataset, "autohas-joint", seed)].info
        hps = info["hyperparameters"]
        lines.append(
            f"- seed {seed}: joint derived {info['params']} params, {hps['optimizer']} "
            f"lr={hps['learning_rate']:.3g} wd={hps['weight_decay']:.2g} {hps['loss']} {hps['augment']}"
            f" ({info['search_steps']} search steps, {info['stop_reason']})"
        )
    return "\n".join(lines)

"""The Markdown body of a preset's section in bench/RESULTS.md: tasks, per-task tables, verdicts."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.results import markdown_table
from bench.suite.figures import REFERENCE, TARGETS, Table
from bench.suite.presets import Preset

Record = dict[str, Any]


def pct(value: float) -> str:
    """An accuracy in percent with one decimal ('—' for NaN)."""
    return "—" if math.isnan(value) else f"{100 * value:.1f}"


def with_ci(mean: float, lo: float, hi: float, scale: float = 100.0, digits: int = 1) -> str:
    """'mean [lo, hi]' ('—' when there is no value; just the mean for one seed)."""
    if math.isnan(mean):
        return "—"
    if lo == hi == mean:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def ratio(value: float) -> str:
    """A compute ratio: 'x.xx', '0' (only the method reached), '∞' (only AutoHAS), '—' (neither)."""
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else ("0" if value == 0 else f"{value:.2f}")


def headroom(calibration: Record) -> tuple[float, float, str]:
    """(best - median random configuration, two test-set standard errors, verdict)."""
    accs = [r["test_accuracy"] for r in calibration["spread"]]
    median, n = statistics.median(accs), calibration["sizes"]["test"]
    room, two_se = max(accs) - median, 2 * math.sqrt(max(median * (1 - median), 1e-6) / n)
    if room < two_se:
        verdict = (
            "**too easy to tell methods apart**: the best random configuration is within noise"
        )
    else:
        verdict = "room to tell methods apart"
    return room, two_se, verdict


def tasks_table(preset: Preset, calibrations: dict[str, Record]) -> str:
    """One row per task: sizes, trial cost, budget, the spread of random configurations."""
    rows = []
    for task in preset.tasks:
        cal = calibrations.get(task)
        if cal is None:
            continue
        accs = sorted(r["test_accuracy"] for r in cal["spread"])
        room, two_se, verdict = headroom(cal)
        sizes = cal["sizes"]
        rows.append([
            task, f"{sizes['train']} / {sizes['val']} / {sizes['test']}",
            f"{cal['trial_cpu']:.2f}", f"{preset.budget_trials * cal['trial_cpu']:.1f}",
            f"{pct(accs[0])} / {pct(statistics.median(accs))} / {pct(accs[-1])} ({len(accs)})",
            f"{100 * room:.1f} (2 SE {100 * two_se:.1f}): {verdict}",
        ])  # fmt: skip
    headers = [
        "task", "train / val / test", "trial CPU s", "budget CPU s",
        "random configs test acc % min / median / max (n)", "headroom, points",
    ]  # fmt: skip
    return markdown_table(headers, rows)


def method_table(table: Table, task: str, methods: list[str]) -> str:
    """Per method: final accuracy with interval, paired difference to AutoHAS, cost, size, latency."""
    rows = []
    for method in methods:
        cells = list(table.cells(task, method).values())
        if not cells:
            rows.append([method, f"did not run: {table.error(task, method) or 'no cells yet'}"])
            continue
        diff = table.paired_difference(task, method) if method != REFERENCE else (math.nan,) * 3
        rows.append([
            method, with_ci(*table.accuracy(task, method)), with_ci(*diff),
            _mid(cells, lambda r: r["total"]["cpu"], 1), _mid(cells, lambda r: r["total"]["wall"], 1),
            _mid(cells, lambda r: r["budget_cpu"], 1), _trials(cells),
            _mid(cells, lambda r: r["params"], 0), _mid(cells, lambda r: r["latency_ms"], 3),
            str(len(cells)),
        ])  # fmt: skip
    headers = [
        "method", "test acc % [95% CI]", "minus AutoHAS, points [95% CI]", "CPU s", "wall s",
        "budget CPU s", "trials", "params", "ONNX ms", "seeds",
    ]  # fmt: skip
    return markdown_table(headers, rows)


def _mid(cells: list[Record], get: Any, digits: int) -> str:
    return f"{statistics.median(get(r) for r in cells):.{digits}f}"


def _trials(cells: list[Record]) -> str:
    counts = sorted(r["trials"] for r in cells)
    if not counts[-1]:
        return "—"
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"


def reach_table(table: Table, task: str, methods: list[str]) -> str:
    """Per method: the compute to reach TPE's and random search's final accuracy, / AutoHAS's."""
    rows = []
    for method in methods:
        row: list[object] = [method]
        for target in TARGETS:
            (mid, lo, hi), reached = table.reach(task, method, target)
            n = len(table.cells(task, target))
            cell = (
                f"{ratio(mid)} [{ratio(lo)}, {ratio(hi)}]" if method != REFERENCE else "reference"
            )
            row.append(f"{cell} ({reached}/{n})" if n else "—")
        rows.append(row)
    headers = [
        "method",
        *[f"to reach {t}'s final acc, x AutoHAS's compute (reached)" for t in TARGETS],
    ]
    return markdown_table(headers, rows)


#: fewer seeds than this give no interval worth a verdict
MIN_SEEDS_FOR_VERDICT = 3


def verdicts(table: Table, task: str, methods: list[str]) -> str:
    """One line per task: the methods AutoHAS beats, ties and loses to (paired 95% intervals)."""
    seeds = len(table.cells(task, REFERENCE))
    if seeds < MIN_SEEDS_FOR_VERDICT:
        return f"- {task}: {seeds} seed(s) of AutoHAS: too few for a verdict"
    groups: dict[str, list[str]] = {"beats": [], "ties with": [], "loses to": []}
    for method in methods:
        if method == REFERENCE or not table.cells(task, method):
            continue
        mean, lo, hi = table.paired_difference(task, method)
        if math.isnan(mean):
            continue
        key = "beats" if hi < 0 else ("loses to" if lo > 0 else "ties with")
        groups[key].append(f"{method} ({100 * -mean:+.1f} points)")
    parts = [f"{k} {', '.join(v)}" for k, v in groups.items() if v]
    return (
        f"- {task}: AutoHAS " + "; ".join(parts) if parts else f"- {task}: nothing to compare yet"
    )

"""The figures the report and the plots share, computed from cell records.

Conventions: a cell's cost is its total CPU seconds (search + final retraining). A trial-based
method's curve has a point after each trial at (search cost so far + its final retraining's cost,
the incumbent's test accuracy as trained in its trial) and ends at (total cost, the retrained
incumbent's test accuracy). AutoHAS's curve is its ladder: one point per budget. The other methods
have one point. "Compute to reach" a target is where a curve first reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.suite.methods import TRIAL_METHODS
from bench.suite.stats import Curve, first_reaching, mean_ci, median_ci, reach_ratio

Record = dict[str, Any]
REFERENCE = "autohas"
TARGETS = ("tpe", "random")


@dataclass(frozen=True)
class Table:
    """The records of one preset, indexed by (task, method, fraction) -> {seed: record}."""

    records: tuple[Record, ...]

    def cells(self, task: str, method: str, fraction: float = 1.0) -> dict[int, Record]:
        """The finished (error-free) records of one method on one task at one budget fraction."""
        return {
            r["seed"]: r
            for r in self.records
            if (r["task"], r["method"], float(r["fraction"])) == (task, method, fraction)
            and "error" not in r
        }

    def error(self, task: str, method: str) -> str:
        """Why a method could not run on a task ('' when it ran)."""
        return next((r["error"] for r in self.records if _is(r, task, method) and "error" in r), "")

    def fractions(self, task: str, method: str) -> list[float]:
        """The budget fractions recorded for a method, increasing."""
        return sorted({float(r["fraction"]) for r in self.records if _is(r, task, method)})

    def curve(self, task: str, method: str, seed: int) -> Curve:
        """The method's best-so-far test accuracy against device-seconds on one seed."""
        if method in TRIAL_METHODS:
            record = self.cells(task, method).get(seed)
            return trial_curve(record) if record else []
        points = [self.cells(task, method, f).get(seed) for f in self.fractions(task, method)]
        return sorted((r["total"]["cpu"], r["test_accuracy"]) for r in points if r)

    def accuracy(self, task: str, method: str) -> tuple[float, float, float]:
        """Mean final test accuracy over seeds, with its 95% interval."""
        return mean_ci([r["test_accuracy"] for r in self.cells(task, method).values()])

    def paired_difference(self, task: str, method: str) -> tuple[float, float, float]:
        """Mean over shared seeds of (method - AutoHAS) final test accuracy, with its interval."""
        own, ref = self.cells(task, method), self.cells(task, REFERENCE)
        return mean_ci([own[s]["test_accuracy"] - ref[s]["test_accuracy"] for s in own if s in ref])

    def reach(self, task: str, method: str, target: str) -> tuple[tuple[float, float, float], int]:
        """Median over seeds of (method's / AutoHAS's cost to reach `target`'s final accuracy), its
        interval, and on how many seeds the method reached it."""
        goals = {s: r["test_accuracy"] for s, r in self.cells(task, target).items()}
        ratios, reached = [], 0
        for seed, goal in goals.items():
            own = first_reaching(self.curve(task, method, seed), goal)
            ref = first_reaching(self.curve(task, REFERENCE, seed), goal)
            reached += not math.isinf(own)
            ratios.append(reach_ratio(own, ref))
        return median_ci(ratios), reached


def _is(record: Record, task: str, method: str) -> bool:
    return (record["task"], record["method"]) == (task, method)


def trial_curve(record: Record) -> Curve:
    """A trial-based cell's curve (see the module docstring)."""
    retrain = record["total"]["cpu"] - record["search"]["cpu"]
    points = [(cpu + retrain, test) for cpu, _wall, _val, test in record["curve"]]
    return [*points, (record["total"]["cpu"], record["test_accuracy"])]


def methods_in(records: Iterable[Record]) -> list[str]:
    """Methods present, in first-seen order."""
    return list(dict.fromkeys(r["method"] for r in records))

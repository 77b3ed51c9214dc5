"""What every method gets (`Context`) and returns (`Outcome`): an incumbent and its search cost.

A method spends at most `ctx.search_budget` CPU seconds searching (it may finish the trial or step
it is in), then returns its incumbent; the suite retrains that incumbent by the common recipe on
train+val from the budget's reserve, so retraining is counted in every method's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.suite.api import Dataset
from bench.suite.meter import Cost, Meter
from bench.suite.recipe import Recipe
from bench.suite.space import Config, JointSpace


class Unavailable(Exception):
    """The method cannot run on this task (the reason is recorded in its cell)."""


@dataclass(frozen=True)
class StepCosts:
    """Measured CPU seconds of one AutoHAS variant: per warm-up step, per later step, fixed part."""

    warmup: float
    alternate: float
    overhead: float

    error: str = ""  # why the probe could not run (the variant is then unavailable)

    def estimate(self, steps: int, warmup_fraction: float) -> float:
        """Estimated CPU seconds of a search of `steps` steps (the first `warmup_fraction` warm-up)."""
        warm = int(steps * warmup_fraction)
        return self.overhead + warm * self.warmup + (steps - warm) * self.alternate

    def estimate_run(self, planned: int, ran: int, warmup_fraction: float) -> float:
        """Estimated CPU seconds of a search planned for `planned` steps that ran `ran` (a time
        budget can stop it early, inside or after its warm-up)."""
        warm = int(planned * warmup_fraction)
        return self.overhead + min(ran, warm) * self.warmup + max(0, ran - warm) * self.alternate

    def steps_for(self, budget: float, warmup_fraction: float) -> int:
        """The most search steps whose estimated cost fits `budget` (at least 1)."""
        if self.error:
            raise Unavailable(self.error)
        per_step = warmup_fraction * self.warmup + (1 - warmup_fraction) * self.alternate
        steps = max(1, int((budget - self.overhead) / max(per_step, 1e-6)))
        while steps > 1 and self.estimate(steps, warmup_fraction) > budget:
            steps -= 1
        return steps


@dataclass
class Context:
    """One (task, method, seed) cell: data, space, recipe, budget, and the running meter."""

    task: str
    npz: Path
    data: Dataset
    space: JointSpace
    recipe: Recipe
    seed: int
    budget: float  # CPU seconds for search + final retraining
    reserve: float  # CPU seconds set aside for the final retraining (one mean trial)
    step_costs: dict[str, StepCosts]  # AutoHAS variant ("joint/differentiable", ...) -> costs
    cost_factor: float = 1.0  # recent AutoHAS runs' actual / estimated search cost
    meter: Meter = field(default_factory=Meter)

    @property
    def search_budget(self) -> float:
        """CPU seconds the search itself may use."""
        return max(0.0, self.budget - self.reserve)

    def trial_seed(self, index: int) -> int:
        """The seed of trial `index` (the same sequence for every trial-based method)."""
        return self.seed * 100_003 + index


@dataclass(frozen=True)
class Point:
    """The incumbent after some search: search cost so far, its validation and test accuracy."""

    cost: Cost
    val_accuracy: float
    test_accuracy: float

    def to_json(self) -> list[float]:
        """[cpu, wall, val, test] (compact: curves have one point per trial)."""
        c = self.cost
        return [round(c.cpu, 3), round(c.wall, 3), self.val_accuracy, self.test_accuracy]


@dataclass
class Outcome:
    """A method's result: the incumbent, what the search cost, and its best-so-far curve."""

    config: Config
    search: Cost
    trials: int = 0  # configurations trained (0: not a trial-based method)
    curve: list[Point] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

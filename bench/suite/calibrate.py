"""Per task, before any method runs: the spread of random configurations, and the budget unit.

The spread trains at least 20 uniformly drawn feasible configurations of the joint space by the
common recipe on train+val and tests them: how much the architecture and hyper-parameters matter on
this task. The mean CPU cost of those trainings is the task's *trial cost*; budgets are multiples of
it. The step costs of each AutoHAS variant are measured with a short search, so that AutoHAS's step
budget can be sized to a budget in seconds.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.suite.api import Dataset, SearchSpace
from bench.suite.meter import Meter
from bench.suite.methods.autohas import VARIANTS, probe_costs, search, search_config
from bench.suite.methods.base import StepCosts
from bench.suite.recipe import Recipe, evaluate, final_model
from bench.suite.space import JointSpace, random_feasible

SPREAD_SEED = 2020


@dataclass(frozen=True)
class Calibration:
    """A task's spread and budget unit, as stored in the results file."""

    task: str
    trial_cpu: float  # mean CPU seconds of one recipe training
    spread: list[dict[str, Any]]  # per configuration: config, test_accuracy, params, cpu
    step_costs: dict[str, StepCosts]
    sizes: dict[str, int]  # train / val / test examples (validation drawn with seed 0)
    space: dict[str, Any]  # the joint space every method searches (SearchSpace JSON)

    @property
    def search_space(self) -> SearchSpace:
        """The joint space as the engine's value."""
        return SearchSpace.from_json(self.space)

    def to_json(self) -> dict[str, Any]:
        """The `calibration` record."""
        costs = {k: vars(v) for k, v in self.step_costs.items()}
        return {
            "task": self.task,
            "trial_cpu": self.trial_cpu,
            "spread": self.spread,
            "steps": costs,
            "sizes": self.sizes,
            "space": self.space,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of `to_json`."""
        costs = {k: StepCosts(**v) for k, v in data["steps"].items()}
        fields = (data["trial_cpu"], data["spread"], costs, data["sizes"], data["space"])
        return cls(data["task"], *fields)


def reprobe(record: dict[str, Any], npz: Path) -> dict[str, Any]:
    """A calibration record with every AutoHAS variant's step costs measured again (after a change
    to the engine: the spread and the trial cost, the budget unit, stay as they were)."""
    warm_up(npz)
    steps = {variant: vars(probe_costs(npz, variant)[0]) for variant in VARIANTS}
    return {**record, "steps": steps}


def spread(data: Dataset, space: JointSpace, recipe: Recipe, n: int) -> list[dict[str, Any]]:
    """`n` random feasible configurations trained on train+val and tested, with their CPU cost."""
    rng, rows = random.Random(SPREAD_SEED), []
    for i in range(n):
        config = random_feasible(space, rng)
        meter = Meter()
        model = final_model(space, data, config, recipe, seed=SPREAD_SEED + i)
        cpu = meter.read().cpu
        row = {"config": config, "params": space.params(config), "cpu": round(cpu, 3)}
        rows.append({**row, "test_accuracy": evaluate(model, data.x_test, data.y_test)})
    return rows


_warm: list[Path] = []


def warm_up(npz: Path) -> None:
    """One tiny search per process, so the first probe does not pay the one-off imports."""
    if not _warm:
        search(search_config(npz, "joint", "differentiable", 2, 0))
        _warm.append(npz)


def calibrate(task: str, npz: Path, data: Dataset, recipe: Recipe, n_spread: int) -> Calibration:
    """Every AutoHAS variant's step costs, the joint space, the spread and the trial cost.

    The joint space is the one AutoHAS's joint search reports it searched: the engine's default
    joint space for the task, less the candidates the engine drops as dead on this input shape.
    """
    warm_up(npz)
    probes = {variant: probe_costs(npz, variant) for variant in VARIANTS}
    costs = {variant: probe[0] for variant, probe in probes.items()}
    space_json = probes["joint/differentiable"][1]
    space = JointSpace.for_data(data, SearchSpace.from_json(space_json))
    rows = spread(data, space, recipe, n_spread)
    sizes = {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)}
    trial_cpu = statistics.mean(r["cpu"] for r in rows)
    return Calibration(task, trial_cpu, rows, costs, sizes, space_json)

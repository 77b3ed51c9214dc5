"""Presets: which tasks, methods and seeds, how long a trial is, and how large the budget is.

Every model the suite trains (trial, final retraining, spread) runs `trial_steps` steps of the
common recipe. A task's budget is `budget_trials` times its measured trial cost (CPU seconds), for
the search and the final retraining together; AutoHAS also runs at the `ladder` fractions of it, so
that its compute-to-reach a target can be read off like the trial-based methods' curves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.suite.api import SearchConfig
from bench.suite.methods import METHODS
from bench.suite.recipe import Recipe
from bench.suite.tasks import TASKS

#: The shortest trial at which a median random configuration trains on every task: measured on this
#: machine with 6 random configurations per task, 30 steps leave most of them near chance on digits
#: and MNIST-1D (12-45% test accuracy), 40 steps reach 57-89%, 60 steps 80-99%.
TRIAL_STEPS = 40


@dataclass(frozen=True)
class Preset:
    """One run of the suite: its plan and the settings that fix its figures."""

    name: str
    seeds: tuple[int, ...]
    budget_trials: float
    ladder: tuple[float, ...] = ()
    trial_steps: int = TRIAL_STEPS
    spread_configs: int = 20
    tasks: tuple[str, ...] = tuple(TASKS)
    methods: tuple[str, ...] = tuple(METHODS)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS)) + sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown tasks or methods: {unknown}")
        if not self.seeds or self.budget_trials < 2 or self.trial_steps < 1:
            raise ValueError("a preset needs seeds, budget_trials >= 2 and trial_steps >= 1")

    @property
    def recipe(self) -> Recipe:
        """The common training recipe."""
        return Recipe(self.trial_steps)

    def settings(self, threads: int) -> dict[str, Any]:
        """What the results file's header pins: a resumed run must use the same."""
        keys = ("budget_trials", "ladder", "trial_steps", "spread_configs")
        fixed = {k: v for k, v in asdict(self).items() if k in keys}
        return {
            **fixed,
            "ladder": list(self.ladder),
            "recipe": asdict(self.recipe),
            "threads": threads,
            "engine": SearchConfig().to_json(),  # the engine defaults AutoHAS runs with
        }


#: a smoke run of every task and method, one seed, a small budget (about 7 minutes on 2 cores)
QUICK = Preset("quick", (0,), budget_trials=4)
#: the protocol: five seeds, at least 30 trials for random search and TPE at the full budget (TPE
#: favours larger models than uniform sampling: on tabular it got 29-36 from 33 trial costs). About
#: 28 minutes per seed on this 2-core machine (2.3 hours in all): more than the 90 minutes asked
#: for, which would need trials of ~27 steps, where most configurations are still near chance.
#: Seeds run in order and the run resumes, so `--full --seeds 0 1 2` then `--full` splits it.
FULL = Preset("full", (0, 1, 2, 3, 4), budget_trials=35, ladder=(1 / 16, 1 / 4))
PRESETS = {p.name: p for p in (QUICK, FULL)}

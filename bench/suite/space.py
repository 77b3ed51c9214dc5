"""The joint space every method searches: the engine's default joint space for the task.

Categorical choices keep their candidates. A continuous choice (learning rate, weight decay) is
searched on a log scale between its smallest and largest basis value: exactly the values AutoHAS can
derive (a probability-weighted sum of the bases). A configuration is feasible under the rule every
derived model obeys (`feasible`: the skip cap and the parameter budget of the default SearchConfig).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.suite.api import (
    CONTINUOUS,
    LAYOUTS,
    Choice,
    Dataset,
    Layout,
    SearchConfig,
    SearchSpace,
    count_params,
    default_space,
    feasible,
    model_args_for,
)

Config = dict[str, Any]


@dataclass(frozen=True)
class JointSpace:
    """The joint (architecture + hyper-parameter) space of one task, with its constraints."""

    space: SearchSpace
    layout: Layout
    input_shape: tuple[int, ...]
    num_classes: int
    max_params: int
    max_skips: int

    @classmethod
    def for_data(cls, data: Dataset, space: SearchSpace | None = None) -> JointSpace:
        """`space` (default: the engine's default joint space) on `data`, default constraints."""
        layout, config = LAYOUTS[data.family], SearchConfig()
        space = space or default_space(layout, data.modality, "joint")
        return cls(
            space, layout, data.input_shape, data.num_classes, config.max_params, config.max_skips
        )

    def split(self, config: Config) -> tuple[Config, Config]:
        """(architecture, hyper-parameters) of `config`, as `model_args_for` and `retrain` take them.

        An architecture choice absent from `config` is left out: the engine builds its default
        (what a mode that fixes the architecture derives)."""
        arch = {c.name: config[c.name] for c in self.space.arch if c.name in config}
        return arch, {c.name: config[c.name] for c in self.space.hparams}

    def join(self, arch: Config, hparams: Config) -> Config:
        """One configuration from an architecture and hyper-parameters (the space's choices only)."""
        names = {c.name for c in self.space.choices}
        return {k: v for k, v in {**arch, **hparams}.items() if k in names}

    def model_args(self, config: Config) -> dict[str, Any]:
        """The child model's arguments (`build_model` takes them)."""
        arch, _ = self.split(config)
        return model_args_for(self.layout, self.input_shape, self.num_classes, arch)

    def params(self, config: Config) -> int:
        """Parameters of the child model `config` selects."""
        return count_params(self.model_args(config))

    def feasible(self, config: Config) -> bool:
        """Within the parameter budget and the skip cap (the engine's own rule)."""
        arch, _ = self.split(config)
        shape, classes = self.input_shape, self.num_classes
        return feasible(arch, self.layout, shape, classes, self.max_params, self.max_skips)

    def contains(self, config: Config) -> bool:
        """`config` sets every hyper-parameter and only choices of the space, each to one of its
        candidates (or inside its continuous range); architecture choices may be left out."""
        names = {c.name for c in self.space.choices}
        if not set(config) <= names or not {c.name for c in self.space.hparams} <= set(config):
            return False
        return all(_allowed(c, config[c.name]) for c in self.space.choices if c.name in config)

    def sample(self, draw: Callable[[Choice], Any]) -> Config:
        """One configuration, each choice drawn by `draw(choice)`."""
        return {c.name: draw(c) for c in self.space.choices}


def _allowed(choice: Choice, value: Any) -> bool:
    if choice.kind != CONTINUOUS:
        return value in choice.candidates
    lo, hi = value_range(choice)
    return lo * (1 - 1e-9) <= float(value) <= hi * (1 + 1e-9)


def value_range(choice: Choice) -> tuple[float, float]:
    """Smallest and largest basis value of a continuous choice (searched on a log scale when > 0)."""
    values = [float(v) for v in choice.candidates]
    return min(values), max(values)


def uniform_draw(rng: random.Random) -> Callable[[Choice], Any]:
    """Random search's draw: uniform over candidates, log-uniform over a continuous range."""

    def draw(choice: Choice) -> Any:
        if choice.kind != CONTINUOUS:
            return rng.choice(choice.candidates)
        lo, hi = value_range(choice)
        return math.exp(rng.uniform(math.log(lo), math.log(hi))) if lo > 0 else rng.uniform(lo, hi)

    return draw


def random_feasible(space: JointSpace, rng: random.Random, tries: int = 1000) -> Config:
    """A uniformly drawn feasible configuration (infeasible draws are redrawn)."""
    draw = uniform_draw(rng)
    for _ in range(tries):
        config = space.sample(draw)
        if space.feasible(config):
            return config
    raise RuntimeError(f"no feasible configuration in {tries} draws")

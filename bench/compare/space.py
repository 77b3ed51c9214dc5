"""The joint space the baselines sample, taken from the engine's own default joint space.

Categorical choices (kernel, expansion, depth, optimizer, loss, augmentation) keep their candidates.
A continuous choice (learning rate, weight decay) is searched on a log scale between its smallest and
largest basis value: exactly the values AutoHAS can derive (a probability-weighted sum of the bases).
A configuration is feasible under the constraints AutoHAS's derivation enforces: at most
``max_params`` parameters and at most ``max_skips`` skipped blocks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autohas_edge.server.search import Dataset, SearchConfig
from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.models import LAYOUTS, Layout, count_params, model_args_for
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace

Config = dict[str, Any]


@dataclass(frozen=True)
class JointSpace:
    """The joint (architecture + hyper-parameter) space for one dataset, with its constraints."""

    space: SearchSpace
    layout: Layout
    input_shape: tuple[int, ...]
    num_classes: int
    max_params: int
    max_skips: int

    @classmethod
    def for_data(cls, data: Dataset, config: SearchConfig) -> JointSpace:
        """The space AutoHAS's joint mode searches on `data`, with `config`'s constraints."""
        layout = LAYOUTS[data.family]
        space = default_space(layout, data.modality, "joint")
        return cls(
            space, layout, data.input_shape, data.num_classes, config.max_params, config.max_skips
        )

    def params(self, config: Config) -> int:
        """Parameters of the child model `config` selects."""
        arch = {c.name: config[c.name] for c in self.space.arch}
        return count_params(model_args_for(self.layout, self.input_shape, self.num_classes, arch))

    def feasible(self, config: Config) -> bool:
        """Within the parameter budget and the skip cap."""
        skips = sum(config[c.name] == "skip" for c in self.space.arch)
        return skips <= self.max_skips and self.params(config) <= self.max_params

    def split(self, config: Config) -> tuple[Config, Config]:
        """(architecture, hyper-parameters) as `model_args_for` and `retrain` take them."""
        arch = {c.name: config[c.name] for c in self.space.arch}
        return arch, {c.name: config[c.name] for c in self.space.hparams}

    def sample(self, draw: Callable[[Choice], Any]) -> Config:
        """One configuration, each choice drawn by `draw(choice)`."""
        return {c.name: draw(c) for c in self.space.choices}


def uniform_draw(rng: random.Random) -> Callable[[Choice], Any]:
    """Random search's draw: uniform over candidates, log-uniform over a continuous range."""

    def draw(choice: Choice) -> Any:
        if choice.kind != CONTINUOUS:
            return rng.choice(choice.candidates)
        lo, hi = value_range(choice)
        return math.exp(rng.uniform(math.log(lo), math.log(hi))) if lo > 0 else rng.uniform(lo, hi)

    return draw


def value_range(choice: Choice) -> tuple[float, float]:
    """Smallest and largest basis value of a continuous choice (searched on a log scale when > 0)."""
    values = [float(v) for v in choice.candidates]
    return min(values), max(values)

"""Search strategies by name: the differentiable mixture (default) and the REINFORCE controller.

A strategy is anything with the small `Strategy` interface below; the runner drives it step by step and
checkpoints it through `state_dict`. Strategies are picked by name from `REGISTRY`, which imports the
chosen one lazily; `register_strategy` adds one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from autohas_edge.server.search.config import SearchConfig
    from autohas_edge.server.search.distributed import Comm
    from autohas_edge.server.search.engine import Batches, History, StepStats
    from autohas_edge.server.search.space import SearchSpace
    from autohas_edge.server.search.supernet import SuperNet


class Strategy(Protocol):
    """What the runner needs of a search strategy: a step, the encodings, and its whole state."""

    batches: Batches  # the data sampler (its generator is checkpointed per worker)
    step_index: int  # steps taken so far
    stop_reason: str  # non-empty once the strategy's own stopping criterion holds
    history: History  # per-step records for result.json and the plot

    def step(self) -> StepStats:
        """One step of the alternating loop."""
        ...

    def encodings(self) -> dict[str, dict[str, float]]:
        """choice -> candidate label -> probability."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        ...


#: strategy name -> "module:class"; the class is called as cls(net, space, batches, config, comm)
REGISTRY = {
    "differentiable": "autohas_edge.server.search.engine:Searcher",
    "reinforce": "autohas_edge.server.search.reinforce:ReinforceSearcher",
}


def register_strategy(name: str, target: str) -> None:
    """Make `target` ("module:Class") available as strategy `name` (it must not exist yet)."""
    if name in REGISTRY:
        raise ValueError(f"strategy {name!r} already exists")
    if target.count(":") != 1:
        raise ValueError(f"strategy target must be 'module:Class', got {target!r}")
    REGISTRY[name] = target


def make_searcher(
    name: str,
    net: SuperNet,
    space: SearchSpace,
    batches: Batches,
    config: SearchConfig,
    comm: Comm | None = None,
) -> Strategy:
    """Instantiate the strategy called `name` (`comm`: this worker's place among several)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(REGISTRY)}")
    module_name, cls_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    strategy: Strategy = cls(net, space, batches, config, comm)
    return strategy

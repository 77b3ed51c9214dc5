"""Search strategies by name: the differentiable mixture (default) and the REINFORCE controller.

Both share the SuperModel, the HP bases, the checkpoint format and `Searcher`'s interface
(`step()`, `encodings()`, `state_dict()`); the registry imports the chosen one lazily.
"""

from __future__ import annotations

import importlib

from autohas_edge.server.search.config import SearchConfig
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.engine import Batches, Searcher
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.supernet import SuperNet

#: strategy name -> "module:class"
REGISTRY = {
    "differentiable": "autohas_edge.server.search.engine:Searcher",
    "reinforce": "autohas_edge.server.search.reinforce:ReinforceSearcher",
}


def make_searcher(
    name: str,
    net: SuperNet,
    space: SearchSpace,
    batches: Batches,
    config: SearchConfig,
    comm: Comm | None = None,
) -> Searcher:
    """Instantiate the strategy called `name` (`comm`: this worker's place among several)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(REGISTRY)}")
    module_name, cls_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(net, space, batches, config, comm)

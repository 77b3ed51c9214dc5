"""The one place the suite touches the search engine, through its public top level only.

Everything else in the suite imports engine names from here, so a change of the engine's API shows
up in one file.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import autohas_edge.server.search as _engine
from autohas_edge.server.search import (
    CONTINUOUS,
    LAYOUTS,
    Choice,
    Dataset,
    Layout,
    SearchConfig,
    SearchSpace,
    SubModel,
    SuperNet,
    accuracy,
    build_model,
    count_params,
    default_space,
    feasible,
    load_dataset,
    model_args_for,
    run_search,
)

__all__ = [
    "CONTINUOUS",
    "LAYOUTS",
    "Choice",
    "Dataset",
    "Layout",
    "SearchConfig",
    "SearchSpace",
    "SubModel",
    "SuperNet",
    "accuracy",
    "build_model",
    "count_params",
    "default_space",
    "feasible",
    "load_dataset",
    "model_args_for",
    "retrain",
    "run_search",
]


def _retrain_function() -> Callable[..., None]:
    """The engine's public `retrain` function.

    Its lazy export shares its name with the submodule that defines it: once any engine module has
    imported that submodule, the package attribute `retrain` is the module, not the function (an
    engine bug, reported). Then take the function the export names from that module.
    """
    value: Any = _engine.retrain
    function: Callable[..., None] = value.retrain if isinstance(value, types.ModuleType) else value
    return function


retrain = _retrain_function()

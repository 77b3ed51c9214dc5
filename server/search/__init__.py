"""The joint architecture + hyper-parameter search engine (AutoHAS), see docs/architecture.md §2-4.

This module is the engine's public API: the CLI, the server's job worker, export and the benchmarks
import only the names below. They load lazily, so importing the package (or its torch-free
`config` and `space` modules) does not import torch; the first use of a torch-backed name does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule defining it
_EXPORTS = {
    # values (torch-free)
    "SearchConfig": "config",
    "MODES": "config",
    "STRATEGIES": "config",
    "DEVICES": "config",
    "Choice": "space",
    "SearchSpace": "space",
    "CATEGORICAL": "space",
    "CONTINUOUS": "space",
    # running a search
    "run_search": "runner",
    "run_search_workers": "launcher",
    "WorkersFailed": "launcher",
    "Rendezvous": "launcher",
    "ProgressEvent": "progress",
    "SearchCancelled": "progress",
    "load_model": "rundir",
    "Dataset": "data",
    "load_dataset": "data",
    "mnist1d_arrays": "data",
    # the space and the child models, for baselines and tools
    "default_space": "defaults",
    "Layout": "models",
    "LAYOUTS": "models",
    "ChildNet": "models",
    "build_model": "models",
    "count_params": "models",
    "count_flops": "costs",
    "measure_latency_ms": "latency",
    "model_args_for": "models",
    "feasible": "derive",
    "retrain": "retraining",
    "accuracy": "retraining",
    "recalibrate_batchnorm": "batchnorm",
    "SuperNet": "supernet",
    "SubModel": "supernet",
    "autocast": "weights",
    # threads
    "apply_threads": "threads",
    "default_threads": "threads",
    "prepare_environment": "threads",
    # strategies
    "Strategy": "strategies",
    "register_strategy": "strategies",
}

__all__ = [
    "CATEGORICAL",
    "CONTINUOUS",
    "DEVICES",
    "LAYOUTS",
    "MODES",
    "STRATEGIES",
    "ChildNet",
    "Choice",
    "Dataset",
    "Layout",
    "ProgressEvent",
    "Rendezvous",
    "SearchCancelled",
    "SearchConfig",
    "SearchSpace",
    "Strategy",
    "SubModel",
    "SuperNet",
    "WorkersFailed",
    "accuracy",
    "apply_threads",
    "autocast",
    "build_model",
    "count_flops",
    "count_params",
    "default_space",
    "default_threads",
    "feasible",
    "load_dataset",
    "load_model",
    "measure_latency_ms",
    "mnist1d_arrays",
    "model_args_for",
    "prepare_environment",
    "recalibrate_batchnorm",
    "register_strategy",
    "retrain",
    "run_search",
    "run_search_workers",
]

if TYPE_CHECKING:
    from autohas_edge.server.search.batchnorm import recalibrate as recalibrate_batchnorm
    from autohas_edge.server.search.config import DEVICES, MODES, STRATEGIES, SearchConfig
    from autohas_edge.server.search.costs import count_flops
    from autohas_edge.server.search.data import Dataset, load_dataset, mnist1d_arrays
    from autohas_edge.server.search.defaults import default_space
    from autohas_edge.server.search.derive import feasible
    from autohas_edge.server.search.latency import measure_latency_ms
    from autohas_edge.server.search.launcher import Rendezvous, WorkersFailed, run_search_workers
    from autohas_edge.server.search.models import (
        LAYOUTS,
        ChildNet,
        Layout,
        build_model,
        count_params,
        model_args_for,
    )
    from autohas_edge.server.search.progress import ProgressEvent, SearchCancelled
    from autohas_edge.server.search.retraining import accuracy, retrain
    from autohas_edge.server.search.rundir import load_model
    from autohas_edge.server.search.runner import run_search
    from autohas_edge.server.search.space import CATEGORICAL, CONTINUOUS, Choice, SearchSpace
    from autohas_edge.server.search.strategies import Strategy, register_strategy
    from autohas_edge.server.search.supernet import SubModel, SuperNet
    from autohas_edge.server.search.threads import (
        apply_threads,
        default_threads,
        prepare_environment,
    )
    from autohas_edge.server.search.weights import autocast


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__

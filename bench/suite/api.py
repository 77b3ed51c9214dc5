"""The one place the suite touches the search engine, through its public top level only.

Everything else in the suite imports engine names from here, so a change of the engine's API shows
up in one file.
"""

from __future__ import annotations

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
    measure_latency_ms,
    model_args_for,
    recalibrate_batchnorm,
    retrain,
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
    "measure_latency_ms",
    "model_args_for",
    "recalibrate_batchnorm",
    "retrain",
    "run_search",
]

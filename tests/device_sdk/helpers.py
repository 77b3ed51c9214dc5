"""Constants and helpers shared by the device SDK tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from autohas_edge.device_sdk import Model
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    InputAlignment,
    InputStatistics,
    holdout_split,
)

TASK = "signals"
#: the app the SDK tests install for
APP = "com.example.keyboard"


def fine_tune_inputs(
    model: Model, x: np.ndarray, y: np.ndarray
) -> tuple[Head, np.ndarray, np.ndarray, HeadHyperparameters]:
    """What `Model.fine_tune(x, y)` of a fresh model trains, rebuilt from its parts.

    The head it starts from (the bundle's, with the input alignment fitted to the training split
    when the manifest's `trainable` is "input+head" and it has the input statistics), the training
    split's features and labels (holdout 0.25, seed 0) and the hyper-parameters.
    """
    labels = np.asarray(y)
    train, _ = holdout_split(labels, 0.25, 0)
    hp = HeadHyperparameters.from_mapping(model.manifest.fine_tuning.hyperparameters)
    raw = model.manifest.raw["fine_tuning"].get("input_statistics")
    stats = InputStatistics.from_manifest(raw, model.input_shape[0])
    fit = hp.trainable == "input+head" and stats is not None
    alignment = InputAlignment.fit(x[train], stats) if fit and stats is not None else None
    base = model._engine.base_head
    start = Head(base.weight, base.bias, alignment)
    return start, model.embed(start.align(x))[train], labels[train], hp


def create_bundle_task(server: Any, manifest_json: dict[str, Any]) -> None:
    """The SDK tests' task (`TASK`, for `APP`) on a test server, shaped like the bundle."""
    server.create_task(
        TASK,
        app_ids=(APP,),
        input_shape=tuple(manifest_json["input"]["shape"][1:]),
        num_classes=manifest_json["fine_tuning"]["num_classes"],
    )

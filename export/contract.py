"""Check a torch model against the derived-model contract (docs/architecture.md §4) and run it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autohas_edge.export.errors import ExportError

#: keys `fine_tuning.hyperparameters` must carry (docs/architecture.md §5)
FINE_TUNING_KEYS = (
    "learning_rate",
    "weight_decay",
    "epochs",
    "batch_size",
    "label_smoothing",
    "optimizer",
)
#: rows per torch forward pass when computing reference outputs
CHUNK = 512


@dataclass(frozen=True)
class ModelSpec:
    """What the manifest says about the model's interface."""

    input_shape: tuple[int, ...]
    num_classes: int
    feature_dim: int
    label_names: list[str]
    fine_tuning: dict[str, Any]


def torch_outputs(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of the eval-mode torch model for `x`, as float32 numpy arrays."""
    logits, features = [], []
    features_of = _features(model)
    with torch.no_grad():
        for i in range(0, len(x), CHUNK):
            batch = torch.from_numpy(np.ascontiguousarray(x[i : i + CHUNK], dtype=np.float32))
            features.append(features_of(batch).float().numpy())
            logits.append(model(batch).float().numpy())
    return np.concatenate(logits), np.concatenate(features)


def _features(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's `features` method (docs/architecture.md §4); `check_contract` checks it exists."""
    features = model.features
    if not callable(features):
        raise TypeError(f"{type(model).__name__}.features is not callable")
    return features


def check_contract(
    model: torch.nn.Module,
    result: dict[str, Any],
    x: np.ndarray,
    source: str,
    result_source: str = "result.json",
) -> ModelSpec:
    """Check the §4 contract (features, Linear classifier, shapes, logits == head(features)) or raise."""
    if not callable(getattr(model, "features", None)):
        raise ExportError(source, "model has no features(x) method (docs/architecture.md §4)")
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, torch.nn.Linear):
        raise ExportError(source, "model.classifier is not an nn.Linear (docs/architecture.md §4)")
    dataset = result.get("dataset") or {}
    input_shape = tuple(int(d) for d in dataset.get("input_shape", x.shape[1:]))
    if tuple(x.shape[1:]) != input_shape:
        raise ExportError(
            result_source,
            f"data has shape {list(x.shape[1:])}, result.json says input_shape {list(input_shape)}",
        )
    logits, features = torch_outputs(model, x[:4])
    num_classes = int(dataset.get("num_classes", classifier.out_features))
    if logits.shape[1:] != (num_classes,) or features.shape[1:] != (classifier.in_features,):
        got = f"logits {list(logits.shape)} and features {list(features.shape)}"
        raise ExportError(
            source,
            f"model outputs {got}, expected [n, {num_classes}] and [n, {classifier.in_features}]",
        )
    with torch.no_grad():
        headed = classifier(torch.from_numpy(features)).numpy()
    if not np.allclose(headed, logits, atol=1e-5, rtol=1e-5):
        raise ExportError(
            source, "model(x) != model.classifier(model.features(x)) (docs/architecture.md §4)"
        )
    labels = [str(n) for n in dataset.get("label_names") or range(num_classes)]
    fine_tuning = fine_tuning_hyperparameters(result, result_source)
    return ModelSpec(input_shape, num_classes, classifier.in_features, labels, fine_tuning)


def fine_tuning_hyperparameters(
    result: dict[str, Any], source: str = "result.json"
) -> dict[str, Any]:
    """The on-device head-training hyper-parameters from result.json's `fine_tuning`."""
    section = result.get("fine_tuning") or {}
    params = section.get("hyperparameters", section)
    missing = [k for k in FINE_TUNING_KEYS if k not in params]
    if missing:
        raise ExportError(source, f"fine_tuning has no {missing[0]!r} (docs/architecture.md §5)")
    return dict(params)

"""One baseline trial: a child model of the joint space trained from scratch and evaluated.

Built from the engine's public pieces (``model_args_for``, ``build_model``, ``retrain``, ``accuracy``)
so a trial trains exactly as AutoHAS retrains its derived model (same functional optimizers, decoupled
weight decay, loss and augmentation bases, warm-up + cosine schedule around the learning rate, batch
size and gradient clipping), except that it sees the training split only: the validation split is
what selects among trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autohas_edge.server.search import Dataset
from autohas_edge.server.search.models import ChildNet, build_model, model_args_for
from autohas_edge.server.search.retrain import accuracy, retrain
from bench.compare.space import Config, JointSpace


@dataclass(frozen=True)
class TrialOutcome:
    """Validation and test accuracy of one trained child, and its size."""

    val_accuracy: float
    test_accuracy: float
    params: int


def child_model(space: JointSpace, data: Dataset, config: Config) -> ChildNet:
    """The untrained child `config` selects, normalising its input with the training split's statistics."""
    arch, _ = space.split(config)
    model = build_model(model_args_for(space.layout, space.input_shape, space.num_classes, arch))
    axes = (0,) if data.family == "mlp" else (0, *range(2, data.x_train.ndim))
    # the same per-channel statistics the engine's searcher puts into the supernet (and so the child)
    mean = data.x_train.mean(axis=axes, keepdims=True)
    std = data.x_train.std(axis=axes, keepdims=True) + 1e-6
    model.norm_mean.copy_(torch.as_tensor(mean.reshape(model.norm_mean.shape)))
    model.norm_std.copy_(torch.as_tensor(std.reshape(model.norm_std.shape)))
    return model


def train_trial(
    space: JointSpace,
    data: Dataset,
    config: Config,
    steps: int,
    batch_size: int,
    grad_clip: float,
    seed: int,
) -> TrialOutcome:
    """Train the child of `config` from scratch on the training split; evaluate on validation and test."""
    torch.manual_seed(seed)
    model = child_model(space, data, config)
    _, hparams = space.split(config)
    retrain(
        model,
        torch.as_tensor(data.x_train),
        torch.as_tensor(data.y_train),
        hparams,
        steps,
        batch_size,
        float(data.x_train.std()),
        torch.Generator().manual_seed(seed),
        grad_clip,
    )
    return TrialOutcome(
        _accuracy(model, data.x_val, data.y_val),
        _accuracy(model, data.x_test, data.y_test),
        space.params(config),
    )


def _accuracy(model: ChildNet, x: np.ndarray, y: np.ndarray) -> float:
    return accuracy(model, torch.as_tensor(x), torch.as_tensor(y))

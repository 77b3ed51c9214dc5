"""The one training recipe: every trial, every final retraining and the spread train this way.

It is the engine's own retraining (`retrain`: functional optimizers, decoupled weight decay, loss and
augmentation bases, warm-up + cosine schedule around the learning rate) at the engine's default batch
size and gradient clipping, for a fixed number of steps. Only the data differ: a trial trains on the
training split (its validation accuracy selects), a final retraining on train+val.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.suite.api import Dataset, SearchConfig, accuracy, build_model, retrain
from bench.suite.space import Config, JointSpace

#: `on_step(step, loss, lr)` after each training step
StepHook = Callable[[int, float, float], None]


@dataclass(frozen=True)
class Recipe:
    """How a model trains: steps, batch size and gradient clipping (the last two: engine defaults)."""

    steps: int
    batch_size: int = SearchConfig().batch_size
    grad_clip: float = SearchConfig().grad_clip


def norm_stats(x: np.ndarray, family: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (per-feature for tabular data) mean and std: what the engine puts in its models."""
    axes = (0,) if family == "mlp" else (0, *range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True) + 1e-6


def set_norm(model: torch.nn.Module, x: np.ndarray, family: str) -> None:
    """Copy the training inputs' statistics into the model's normalisation buffers."""
    for name, value in zip(("norm_mean", "norm_std"), norm_stats(x, family), strict=True):
        buffer = model.get_buffer(name)
        buffer.copy_(torch.as_tensor(value.reshape(buffer.shape)))


def new_child(
    space: JointSpace, config: Config, x: np.ndarray, family: str, seed: int
) -> torch.nn.Module:
    """The untrained child of `config`, initialised from `seed`, normalising by the statistics of x."""
    torch.manual_seed(seed)
    model = build_model(space.model_args(config))
    set_norm(model, x, family)
    return model


def fit(
    model: torch.nn.Module,
    hparams: Config,
    x: np.ndarray,
    y: np.ndarray,
    recipe: Recipe,
    seed: int,
    on_step: StepHook | None = None,
) -> None:
    """Train `model` in place on (x, y) by the recipe with `hparams`; batches drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    args = (recipe.steps, recipe.batch_size, float(x.std()), gen, recipe.grad_clip)
    retrain(model, xt, yt, hparams, *args, on_step=on_step)


def train_child(
    space: JointSpace,
    config: Config,
    x: np.ndarray,
    y: np.ndarray,
    family: str,
    recipe: Recipe,
    seed: int,
) -> torch.nn.Module:
    """A child of `config` trained from scratch on (x, y) by the recipe, seeded by `seed`."""
    model = new_child(space, config, x, family, seed)
    fit(model, space.split(config)[1], x, y, recipe, seed)
    return model


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (eval mode)."""
    return accuracy(model, torch.as_tensor(x), torch.as_tensor(y))


def train_val(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation splits together: what a final retraining sees."""
    return np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])


def final_model(
    space: JointSpace, data: Dataset, config: Config, recipe: Recipe, seed: int
) -> torch.nn.Module:
    """The incumbent retrained on train+val by the recipe (the same seed for every method)."""
    x, y = train_val(data)
    return train_child(space, config, x, y, data.family, recipe, seed)

"""Batch-norm statistics re-estimated on the finished weights ("precise BN").

During training a batch-norm layer keeps an exponential moving average (momentum 0.1) of the batch
statistics of weights that kept changing, and starts from mean 0, variance 1. After a long training
the average has caught up; after a short one it has not: on the benchmark suite's gesture task a
10-step training evaluated with its running statistics predicted one class for every example (19%,
chance), and 61-73% once the statistics were re-estimated; at 40 steps, re-estimating added up to 20
points (e.g. 86% -> 98.5%). Short trainings are what the training race and a quick study run, so
those get their statistics re-estimated once (`retrain(..., reestimate_bn=True)`; a final
retraining only under `runner.REESTIMATE_BELOW_STEPS` steps), from a forward pass over a few
training batches (under the training's augmentation) with the weights fixed. The cost is a few
forward passes (`EXAMPLES` examples).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from autohas_edge.server.search.weights import autocast

#: training examples the statistics are re-estimated from (evenly spaced over the data)
EXAMPLES = 512

_BatchNorm = nn.modules.batchnorm._BatchNorm


def spaced_batches(
    x: torch.Tensor, batch_size: int, examples: int = EXAMPLES
) -> list[torch.Tensor]:
    """Up to `examples` rows of `x`, evenly spaced (deterministic, no generator consumed), in
    batches of `batch_size` (the training batch size: the size the statistics were trained at)."""
    n = min(len(x), examples)
    rows = x[torch.linspace(0, len(x) - 1, n, device=x.device).round().long()]
    # a batch of one has no variance: batch norm refuses it in training mode
    return [b for b in rows.split(max(2, batch_size)) if len(b) > 1]


@torch.no_grad()
def recalibrate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    forward: Callable[[torch.Tensor], object] | None = None,
) -> bool:
    """Replace every batch-norm layer's running statistics with their cumulative average over
    `batches` (`forward(batch)` runs the model; default `model(batch)`), weights untouched; the
    layers' momentum and the model's train/eval mode are restored. False (nothing done) when
    `model` has no batch-norm layer or `batches` is empty."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    batches = list(batches)
    if not layers or not batches:
        return False
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
    model.train()
    run = forward or model
    for xb in batches:
        with autocast(xb.device):
            run(xb)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    model.train(was_training)
    return True


#: the name the package exports it under
recalibrate_batchnorm = recalibrate

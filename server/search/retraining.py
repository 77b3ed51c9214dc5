"""Retraining the derived model with the derived hyper-parameters, and test evaluation.

The update is the same functional one the search used (same optimizer directions, decoupled weight
decay, loss and augmentation bases), so a derived hyper-parameter means exactly what it meant during
the search; the derived learning rate is the peak of a warm-up + cosine schedule. A finished
training's batch-norm statistics are re-estimated on the final weights (`batchnorm`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.augment import augment
from autohas_edge.server.search.batchnorm import recalibrate, spaced_batches
from autohas_edge.server.search.weights import FlatWeights, autocast, clip, iterate

StepCallback = Callable[[int, float, float], None]


def retrain(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    hparams: dict[str, Any],
    steps: int,
    batch_size: int,
    scale: float,
    gen: torch.Generator,
    grad_clip: float,
    on_step: StepCallback | None = None,
    schedule: list[float] | None = None,
    reestimate_bn: bool = True,
) -> None:
    """Train `model` in place for `steps` steps; `on_step(step, loss, lr)` after each.

    The rate follows warm-up + cosine around `hparams["learning_rate"]`, or, given `schedule` (a
    searched trajectory of rates), that trajectory stretched to `steps` under the same envelope.
    At the end (unless `reestimate_bn` is False) the batch-norm statistics are re-estimated on the
    final weights, from training examples under the training's augmentation (the model's mode is
    left as training left it).
    """
    flat = FlatWeights(model)
    optimizer, policy, loss_name = (
        str(hparams["optimizer"]),
        str(hparams["augment"]),
        str(hparams["loss"]),
    )
    peak, wd = float(hparams["learning_rate"]), float(hparams["weight_decay"])
    state = hp.init_state([optimizer], flat.get())
    warmup = max(1, steps // 20)
    model.train()
    for t in range(steps):
        with record_function("retrain.step"):
            idx = torch.randint(len(x), (batch_size,), generator=gen, device=x.device)
            xb = augment(x[idx], policy, scale, gen)
            with autocast(xb.device):
                logits = model(xb)
            ce, uniform = hp.per_example_losses(logits, y[idx])
            loss = hp.basis_loss(ce, uniform, loss_name).mean()
            grad = clip(flat.flat_grad(loss), grad_clip)
            d, new_state = hp.direction(optimizer, grad, state)
            hp.commit(state, [new_state])
            base = peak if schedule is None else stretched(schedule, t, steps)
            lr = base * hp.cosine_factor(t, steps, warmup)
            w = flat.get()
            flat.set(w - lr * d - lr * wd * w)
        if on_step is not None:
            on_step(t, float(loss.detach()), lr)
    if steps > 0 and reestimate_bn:
        recalibrate(model, _augmented(spaced_batches(x, batch_size), policy, scale))


def _augmented(batches: list[torch.Tensor], policy: str, scale: float) -> list[torch.Tensor]:
    """`batches` under the training's augmentation (what its batch statistics were trained on),
    drawn from a generator of their own: the training's generator is left where training left it."""
    if not batches:
        return []
    gen = torch.Generator(batches[0].device).manual_seed(0)
    return [augment(b, policy, scale, gen) for b in batches]


def stretched(trajectory: list[float], step: int, steps: int) -> float:
    """The value of `trajectory` at the same fraction of its length as `step` of `steps` (linear)."""
    if not trajectory:
        raise ValueError("an empty learning-rate trajectory")
    position = step / max(1, steps - 1) * (len(trajectory) - 1)
    lo = int(position)
    hi = min(lo + 1, len(trajectory) - 1)
    return trajectory[lo] + (trajectory[hi] - trajectory[lo]) * (position - lo)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `model` in eval mode."""
    model.eval()
    correct = sum(
        int((model(xb).argmax(1) == yb).sum())
        for xb, yb in zip(iterate(x, batch_size), iterate(y, batch_size), strict=True)
    )
    return correct / max(1, len(x))

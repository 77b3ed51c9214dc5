"""The training race: the derived model's optimizer and learning rate, chosen from fresh trainings.

The encodings judge every hyper-parameter on the shared weights mid-training, a few steps ahead.
That suits the regularising ones (weight decay, loss, augmentation: how the *same* weights should
move next), but not the two that decide how a *fresh* training gets going. On shared weights that
have trained a while, gradients are small, so an adaptive optimizer's normalised steps look best
and the look-ahead prefers a small rate (short-horizon bias): on the benchmark suite the joint search
derived RMSprop or Adam in 15 of 15 runs, and a rate that never left the bases' mean.

So after the search, the derived architecture trains from scratch once per (optimizer, learning
rate) pair of the space's bases, plus the pair the encodings derived, for a short `steps` on the
training split; the pair with the best validation accuracy (then loss) is the one the model is
retrained with. Everything else the search derived (architecture, weight decay, loss,
augmentation) is kept. Each race training is the retraining recipe, so the race costs
`len(candidates) * steps` retraining steps.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from autohas_edge.server.search.retraining import retrain
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.weights import iterate

#: `on_entry(done, total)` after each race training
RaceProgress = Callable[[int, int], None]
#: a time-bounded race first times this many training steps of the derived model
PROBE_STEPS = 4
#: the shortest race training worth running (below it, the race is skipped)
MIN_STEPS = 10


@dataclass(frozen=True)
class Entry:
    """One race training: its optimizer and rate, and how the trained model did on validation."""

    optimizer: str
    learning_rate: float
    val_accuracy: float
    val_loss: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded)."""
        return {
            "optimizer": self.optimizer,
            "learning_rate": round(self.learning_rate, 6),
            "val_accuracy": round(self.val_accuracy, 4),
            "val_loss": round(self.val_loss, 4),
        }


def candidates(space: SearchSpace, derived: dict[str, Any]) -> list[tuple[str, float]]:
    """(optimizer, rate) pairs to race: every basis pair of the space, the derived pair first.

    Fewer than two pairs (a space with one optimizer and one rate, e.g. `nas` mode) means no race."""
    choices = {c.name: c for c in space.hparams}
    optimizers = [str(o) for o in choices["optimizer"].candidates]
    rates = [float(r) for r in choices["learning_rate"].candidates]
    first = (str(derived["optimizer"]), float(derived["learning_rate"]))
    grid = [p for p in itertools.product(optimizers, rates) if not _same(p, first)]
    pairs = [first, *grid]
    return pairs if len(pairs) > 1 else []


def _same(a: tuple[str, float], b: tuple[str, float]) -> bool:
    return a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6 * max(abs(a[1]), abs(b[1]))


@dataclass(frozen=True)
class Split:
    """What a race training sees: training and validation tensors, the augmentation scale."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    scale: float


@dataclass(frozen=True)
class Recipe:
    """How every race training runs: its length, batch size, gradient clipping and seed."""

    steps: int
    batch_size: int
    grad_clip: float
    seed: int


def run_race(
    new_model: Callable[[], nn.Module],
    pairs: list[tuple[str, float]],
    hparams: dict[str, Any],
    split: Split,
    recipe: Recipe,
    on_entry: RaceProgress | None = None,
) -> list[Entry]:
    """Train a fresh `new_model()` by `recipe` with each pair (the other hyper-parameters from
    `hparams`), every one from the same initial weights and batches; their validation results."""
    entries = []
    for i, (optimizer, rate) in enumerate(pairs):
        model = _train(
            new_model, {**hparams, "optimizer": optimizer, "learning_rate": rate}, split, recipe
        )
        entries.append(Entry(optimizer, rate, *_validate(model, split)))
        if on_entry is not None:
            on_entry(i + 1, len(pairs))
    return entries


def _train(
    new_model: Callable[[], nn.Module], trial: dict[str, Any], split: Split, recipe: Recipe
) -> nn.Module:
    torch.manual_seed(recipe.seed)
    model = new_model()
    gen = torch.Generator(split.x_train.device).manual_seed(recipe.seed)
    retrain(
        model,
        split.x_train,
        split.y_train,
        trial,
        recipe.steps,
        recipe.batch_size,
        split.scale,
        gen,
        recipe.grad_clip,
    )
    return model


def seconds_per_step(
    new_model: Callable[[], nn.Module], hparams: dict[str, Any], split: Split, recipe: Recipe
) -> float:
    """Wall-clock seconds of one race training step, timed over a few steps after a first one."""
    probe = replace(recipe, steps=1)
    _train(new_model, hparams, split, probe)  # first call: allocations, kernel selection
    start = time.perf_counter()
    _train(new_model, hparams, split, replace(recipe, steps=PROBE_STEPS))
    return (time.perf_counter() - start) / PROBE_STEPS


def fitted_steps(steps: int, pairs: int, per_step: float, seconds: float) -> int:
    """The race length that fits `pairs` trainings into `seconds` (at most `steps`; 0 when
    fewer than `MIN_STEPS` fit: too short a training says nothing about a longer one)."""
    fit = int(seconds / max(per_step * pairs, 1e-9))
    fit = min(steps, fit)
    return fit if fit >= MIN_STEPS else 0


@torch.no_grad()
def _validate(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """Validation accuracy and mean cross-entropy (a diverged training scores loss infinity)."""
    model.eval()
    correct, total_ce = 0, 0.0
    for xb, yb in zip(
        iterate(split.x_val, batch_size), iterate(split.y_val, batch_size), strict=True
    ):
        logits = model(xb)
        correct += int((logits.argmax(1) == yb).sum())
        total_ce += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
    n = max(1, len(split.y_val))
    loss = total_ce / n
    return correct / n, loss if math.isfinite(loss) else math.inf


def winner(entries: list[Entry]) -> Entry:
    """The best validation accuracy; among equals, the lowest validation loss, then the earliest
    (the derived pair races first, so it keeps a tie)."""
    return min(entries, key=lambda e: (-e.val_accuracy, e.val_loss))

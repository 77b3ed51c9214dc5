"""The training race: the derived model's optimizer and learning rate, chosen from fresh trainings.

The encodings judge every hyper-parameter on the shared weights mid-training, a few steps ahead.
That suits the regularising ones (weight decay, loss, augmentation: how the *same* weights should
move next), but not the two that decide how a *fresh* training gets going. On shared weights that
have trained a while, gradients are small, so an adaptive optimizer's normalised steps look best
and the look-ahead prefers a small rate (short-horizon bias): on the benchmark suite the joint search
derived RMSprop or Adam in 15 of 15 runs, and a rate that never left the bases' mean.

So after the search, the derived architecture trains from scratch once per (optimizer, learning
rate) pair of the space's bases, plus the pair the encodings derived, on the training split, by
successive halving: every pair for a quarter of the race length, then the best third (by validation
accuracy, then loss) for the whole length; the pair with the best validation accuracy (then loss) in
the last rung is the one the model is retrained with. Everything else the search derived
(architecture, weight decay, loss, augmentation) is kept. Each race training is the retraining
recipe, so the race costs `cost_in_steps(pairs, steps)` retraining steps (6.5 whole trainings for
ten pairs).
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
#: successive halving (as in Hyperband): with more than `HALVING_FROM` pairs, every pair first
#: trains a quarter of the race length and the best third the whole length (6.5 instead of 10
#: whole trainings for ten pairs). The best by validation accuracy, not loss: after a
#: few steps the smallest rates have the lowest loss (their logits are still near uniform), and on
#: the suite a loss-ranked first rung kept them and lost 2-12 points
FIRST_RUNG, KEEP, HALVING_FROM = 4, 3, 4


@dataclass(frozen=True)
class Entry:
    """One race training: its optimizer and rate, and how the trained model did on validation."""

    optimizer: str
    learning_rate: float
    steps: int
    val_accuracy: float
    val_loss: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded)."""
        return {
            "optimizer": self.optimizer,
            "steps": self.steps,
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


def rungs(pairs: int, steps: int) -> list[tuple[int, int]]:
    """(pairs, steps) per rung: one rung of every pair at `steps`, or, with enough pairs and a
    first rung of at least `MIN_STEPS`, all pairs at a quarter then the best third at `steps`."""
    short = steps // FIRST_RUNG
    if pairs <= HALVING_FROM or short < MIN_STEPS:
        return [(pairs, steps)]
    return [(pairs, short), (math.ceil(pairs / KEEP), steps)]


def cost_in_steps(pairs: int, steps: int) -> int:
    """Training steps the whole race runs."""
    return sum(n * length for n, length in rungs(pairs, steps))


def run_race(
    new_model: Callable[[], nn.Module],
    pairs: list[tuple[str, float]],
    hparams: dict[str, Any],
    split: Split,
    recipe: Recipe,
    on_entry: RaceProgress | None = None,
) -> list[Entry]:
    """Train a fresh `new_model()` by `recipe` with each pair (the other hyper-parameters from
    `hparams`), every one from the same initial weights and batches, rung by rung (`rungs`); every
    training's validation results, the last rung's last."""
    plan = rungs(len(pairs), recipe.steps)
    total, entries, alive = sum(n for n, _ in plan), [], pairs
    for n, steps in plan:
        alive = alive[:n]
        rung = []
        for optimizer, rate in alive:
            trial = {**hparams, "optimizer": optimizer, "learning_rate": rate}
            model = train(new_model, trial, split, replace(recipe, steps=steps))
            rung.append(Entry(optimizer, rate, steps, *validate(model, split)))
            entries.append(rung[-1])
            if on_entry is not None:
                on_entry(len(entries), total)
        alive = [(e.optimizer, e.learning_rate) for e in sorted(rung, key=_rank)]
    return entries


def train(
    new_model: Callable[[], nn.Module], trial: dict[str, Any], split: Split, recipe: Recipe
) -> nn.Module:
    """A fresh `new_model()` trained by `recipe` with the hyper-parameters `trial` on `split`'s
    training tensors, seeded: every call starts from the same weights and draws the same batches."""
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


@dataclass(frozen=True)
class Timing:
    """What a race training costs in wall-clock seconds: per step, and once per training
    (building and seeding the model, re-estimating its batch-norm statistics, validating it)."""

    per_step: float
    per_training: float = 0.0


def time_trainings(
    new_model: Callable[[], nn.Module], hparams: dict[str, Any], split: Split, recipe: Recipe
) -> Timing:
    """Time a race training of 1 and of `1 + PROBE_STEPS` steps (validation included), after an
    untimed first one: their difference gives the cost per step, the rest the cost per training."""
    one = replace(recipe, steps=1)
    train(new_model, hparams, split, one)  # first call: allocations, kernel selection
    seconds = []
    for probe in (one, replace(recipe, steps=1 + PROBE_STEPS)):
        start = time.perf_counter()
        validate(train(new_model, hparams, split, probe), split)
        seconds.append(time.perf_counter() - start)
    per_step = max(1e-9, (seconds[1] - seconds[0]) / PROBE_STEPS)
    return Timing(per_step, max(0.0, seconds[0] - per_step))


def fitted_steps(
    steps: int, pairs: int, per_step: float, seconds: float, per_training: float = 0.0
) -> int:
    """The longest race length, at most `steps`, whose rungs fit `seconds` at `per_step` seconds a
    step and `per_training` seconds a training (0 when not even `MIN_STEPS` fit: too short a
    training says nothing about a longer one)."""

    def cost(length: int) -> float:
        plan = rungs(pairs, length)
        return cost_in_steps(pairs, length) * per_step + sum(n for n, _ in plan) * per_training

    fit = steps
    while fit >= MIN_STEPS and cost(fit) > seconds:
        fit -= 1
    return fit if fit >= MIN_STEPS else 0


@torch.no_grad()
def validate(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """`model`'s validation accuracy and mean cross-entropy (loss infinity for a diverged one)."""
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


def _rank(entry: Entry) -> tuple[float, float]:
    return -entry.val_accuracy, entry.val_loss


def winner(entries: list[Entry]) -> Entry:
    """Among the longest trainings: the best validation accuracy; among equals, the lowest
    validation loss, then the earliest (the derived pair races first, so it keeps a tie)."""
    longest = max(e.steps for e in entries)
    return min((e for e in entries if e.steps == longest), key=_rank)

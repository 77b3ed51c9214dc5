"""Weight-sharing random search: the standard control for whether AutoHAS's encodings learn anything.

The engine's SuperModel (the same shared weights AutoHAS searches on) is trained for most of the
search budget on uniformly sampled feasible sub-models (single-path, as in SPOS); then random
feasible architectures are ranked by their validation accuracy on the shared weights, each after
re-estimating batch-norm statistics on the same few training batches, until the budget is spent.
The best one is the incumbent, with the hyper-parameters the engine fixes in NAS mode (a weight-
sharing ranking cannot judge hyper-parameters), so it is the exact control for AutoHAS NAS-only.
The SuperModel trains with SGD + momentum at the fixed learning rate (SGD-equivalent by the engine's
convention), decoupled weight decay, a time-based warm-up + cosine schedule and no augmentation.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F

from bench.suite.api import LAYOUTS, SubModel, SuperNet, default_space, recalibrate_batchnorm
from bench.suite.methods.base import Context, Outcome
from bench.suite.recipe import set_norm
from bench.suite.space import Config, random_feasible

TRAIN_FRACTION = 0.8  # of the search budget; the rest ranks sampled architectures
CALIBRATION_BATCHES = 4
MAX_CANDIDATES = 200
MOMENTUM = 0.9
WARMUP = 0.05  # fraction of the training time


def fixed_hparams(ctx: Context) -> Config:
    """The hyper-parameters the engine's NAS mode keeps fixed for this task."""
    space = default_space(LAYOUTS[ctx.data.family], ctx.data.modality, "nas")
    return {c.name: c.candidates[0] for c in space.hparams}


def picks(ctx: Context, config: Config) -> SubModel:
    """The SubModel (choice -> candidate index) of a configuration's architecture."""
    return SubModel({c.name: c.candidates.index(config[c.name]) for c in ctx.space.space.arch})


def _smoothing(loss: str) -> float:
    return 0.0 if loss == "ce" else float(loss.removeprefix("ls"))


def train_supernet(ctx: Context, net: SuperNet, hparams: Config, rng: random.Random) -> int:
    """Train on sampled sub-models until the training share of the budget is spent; steps taken."""
    lr, wd = float(hparams["learning_rate"]), float(hparams["weight_decay"])
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM)
    gen, data = torch.Generator().manual_seed(ctx.seed), ctx.data
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    allotted, steps = ctx.search_budget * TRAIN_FRACTION, 0
    net.train()
    while (used := ctx.meter.read().cpu) < allotted:
        sub = picks(ctx, random_feasible(ctx.space, rng))
        idx = torch.randint(len(x), (ctx.recipe.batch_size,), generator=gen)
        loss = F.cross_entropy(
            net(x[idx], sub), y[idx], label_smoothing=_smoothing(hparams["loss"])
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), ctx.recipe.grad_clip)
        _set_lr(optimizer, lr * _schedule(used / max(allotted, 1e-9)))
        optimizer.step()
        _decay(net, optimizer.param_groups[0]["lr"] * wd)
        steps += 1
    return steps


def _schedule(progress: float) -> float:
    if progress < WARMUP:
        return max(progress / WARMUP, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def _decay(net: SuperNet, amount: float) -> None:
    for p in net.parameters():
        p.mul_(1 - amount)


@torch.no_grad()
def shared_accuracy(ctx: Context, net: SuperNet, sub: SubModel, batches: list) -> float:
    """Validation accuracy of `sub` on the shared weights, batch-norm statistics re-estimated."""
    recalibrate_batchnorm(net, batches, lambda xb: net(xb, sub))
    net.eval()
    x, y = torch.as_tensor(ctx.data.x_val), torch.as_tensor(ctx.data.y_val)
    return float((net(x, sub).argmax(1) == y).float().mean())


def rank(ctx: Context, net: SuperNet, rng: random.Random) -> list[tuple[float, Config]]:
    """(shared-weight validation accuracy, configuration) of random architectures, in draw order."""
    gen, x = torch.Generator().manual_seed(ctx.seed + 1), torch.as_tensor(ctx.data.x_train)
    size = ctx.recipe.batch_size
    batches = [x[torch.randint(len(x), (size,), generator=gen)] for _ in range(CALIBRATION_BATCHES)]
    ranked: list[tuple[float, Config]] = []
    while len(ranked) < MAX_CANDIDATES and (ctx.meter.read().cpu < ctx.search_budget or not ranked):
        config = random_feasible(ctx.space, rng)
        ranked.append((shared_accuracy(ctx, net, picks(ctx, config), batches), config))
    return ranked


def weight_sharing(ctx: Context) -> Outcome:
    """Train the SuperModel on random sub-models, rank random architectures on it, keep the best."""
    data, rng = ctx.data, random.Random(ctx.seed)
    torch.manual_seed(ctx.seed)
    net = SuperNet(LAYOUTS[data.family], ctx.space.space.arch, data.input_shape, data.num_classes)
    set_norm(net, data.x_train, data.family)
    steps = train_supernet(ctx, net, fixed_hparams(ctx), rng)
    ranked = rank(ctx, net, rng)
    val, best = max(ranked, key=lambda item: item[0])  # ties keep the earlier draw
    arch, _ = ctx.space.split(best)
    info: dict[str, Any] = {"supernet_steps": steps, "ranked": len(ranked), "shared_val": val}
    return Outcome(ctx.space.join(arch, fixed_hparams(ctx)), ctx.meter.read(), info=info)

"""Hyper-parameter bases: functional optimizer updates, training losses, and their validation.

Every optimizer basis is written as a direction d (the step is ``w -= lr * d + lr * wd * w``) so that
the method's combined update ``sum_o P_o * update_o`` and the closed form of the temporary weights are
plain linear algebra on flat weight vectors. Adam and RMSprop directions carry a fixed scale so that a
single learning-rate basis means a sensible step for every optimizer (the learning rate is expressed as
the SGD-with-momentum equivalent; the effective rate of optimizer o is ``lr * LR_SCALE[o]``).
Weight decay is decoupled from the optimizer, as in AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from autohas_edge.server.search.augment import POLICIES
from autohas_edge.server.search.space import CONTINUOUS, Choice

HP_NAMES = ("learning_rate", "weight_decay", "optimizer", "loss", "augment")
#: effective learning rate of each optimizer = searched learning rate * scale
LR_SCALE = {"sgd": 1.0, "adam": 0.03, "rmsprop": 0.01}
MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
RMSPROP_ALPHA = 0.99
EPS = 1e-8

State = dict[str, torch.Tensor]


def label_smoothing(loss_name: str) -> float:
    """The smoothing of a loss basis: "ce" -> 0, "ls0.1" -> 0.1; a ValueError for anything else."""
    if loss_name == "ce":
        return 0.0
    if loss_name.startswith("ls"):
        try:
            eps = float(loss_name[2:])
        except ValueError:
            eps = -1.0
        if 0.0 < eps < 1.0:
            return eps
    raise ValueError(f"unknown loss basis {loss_name!r}: use 'ce' or 'ls<eps>' with 0 < eps < 1")


def validate_hparams(choices: Iterable[Choice], modality: str) -> None:
    """Check the hyper-parameter choices: all five present, bases in range, names known."""
    by_name = {c.name: c for c in choices}
    missing = [n for n in HP_NAMES if n not in by_name]
    unknown = sorted(set(by_name) - set(HP_NAMES))
    if missing or unknown:
        raise ValueError(
            f"hyper-parameter choices must be exactly {list(HP_NAMES)}: missing {missing}, unknown {unknown}"
        )
    for name in ("learning_rate", "weight_decay"):
        if by_name[name].kind != CONTINUOUS:
            raise ValueError(f"{name} must be a continuous (basis) choice")
    if any(float(v) <= 0 for v in by_name["learning_rate"].candidates):
        raise ValueError(
            f"learning-rate bases must be positive, got {list(by_name['learning_rate'].candidates)}"
        )
    if any(float(v) < 0 for v in by_name["weight_decay"].candidates):
        raise ValueError(
            f"weight-decay bases must be >= 0, got {list(by_name['weight_decay'].candidates)}"
        )
    bad = [o for o in by_name["optimizer"].candidates if o not in LR_SCALE]
    if bad:
        raise ValueError(f"unknown optimizer bases {bad}; known: {sorted(LR_SCALE)}")
    for loss in by_name["loss"].candidates:
        label_smoothing(str(loss))
    bad = [a for a in by_name["augment"].candidates if a not in POLICIES[modality]]
    if bad:
        raise ValueError(
            f"unknown augmentation policies {bad} for {modality} data; known: {POLICIES[modality]}"
        )


def init_state(optimizers: Iterable[str], like: torch.Tensor) -> State:
    """Zero optimizer state for every optimizer basis, on flat weight vectors shaped like `like`."""
    state: State = {"step": torch.zeros((), dtype=torch.float64)}
    for name in optimizers:
        keys = {"sgd": ("sgd.m",), "adam": ("adam.m", "adam.v"), "rmsprop": ("rmsprop.v",)}[name]
        for key in keys:
            state[key] = torch.zeros_like(like)
    return state


def direction(name: str, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """Direction d of optimizer `name` for gradient `grad`, and the state after it (input untouched)."""
    step = float(state["step"]) + 1.0
    if name == "sgd":
        m = state["sgd.m"] * MOMENTUM + grad
        return m, {"sgd.m": m}
    if name == "adam":
        b1, b2 = ADAM_BETAS
        m = state["adam.m"] * b1 + grad * (1 - b1)
        v = state["adam.v"] * b2 + grad * grad * (1 - b2)
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        return LR_SCALE["adam"] * m_hat / (v_hat.sqrt() + EPS), {"adam.m": m, "adam.v": v}
    if name == "rmsprop":
        v = state["rmsprop.v"] * RMSPROP_ALPHA + grad * grad * (1 - RMSPROP_ALPHA)
        return LR_SCALE["rmsprop"] * grad / (v.sqrt() + EPS), {"rmsprop.v": v}
    raise ValueError(f"unknown optimizer {name!r}")


def commit(state: State, updates: Iterable[State]) -> None:
    """Store the new optimizer state in place and count the step."""
    for update in updates:
        for key, value in update.items():
            state[key].copy_(value)
    state["step"] += 1


def per_example_losses(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two primitive losses every loss basis mixes: cross-entropy and the uniform-target loss."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # mixed precision: losses in float32
        logits = logits.float()
    log_probs = F.log_softmax(logits, dim=1)
    ce = -log_probs.gather(1, targets[:, None]).squeeze(1)
    return ce, -log_probs.mean(dim=1)


def basis_loss(ce: torch.Tensor, uniform: torch.Tensor, loss_name: str) -> torch.Tensor:
    """Per-example loss of one loss basis (label smoothing is linear in the two primitives)."""
    eps = label_smoothing(loss_name)
    return ce * (1 - eps) + uniform * eps


def cosine_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero: the retraining schedule around the derived rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

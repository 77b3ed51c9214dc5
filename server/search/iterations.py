"""The two iterations of the alternating loop (claims 1-4, 9-10), as functions on flat weights.

First iteration: forward the combined model (architecture mixed by P^A) on a training batch, and update
W with the hyper-parameters combined by P^H: ``W -= E[lr] * sum_o P_o d_o(g) + E[lr] E[wd] W`` where g is
the gradient of ``sum_a P_a sum_l P_l loss_l`` (augmentation basis a acts on its own chunk; by
default every chunk holds the same examples).

Second iteration: temporary weights ``W_b = W - lr_b d_{o_b}(g_{l_b, a_b}) - lr_b wd_b W``, one step per
HP basis set b of the Cartesian product, combined as ``W' = sum_b P_b W_b``. Gradients depend only on
(loss, augmentation), so the fast path computes one per such pair (two backward passes per augmentation
chunk: label smoothing is linear in cross-entropy and the uniform-target loss) and uses the closed form
``W' = W - E[lr] sum_{o,l,a} P_o P_l P_a d_o(g_{l,a}) - E[lr] E[wd] W``; the explicit path builds every
W_b. Gradients g are treated as constants of the encodings (first-order, as in first-order DARTS).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.augment import augment
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.supernet import Arch, detached
from autohas_edge.server.search.weights import FlatWeights, autocast, clip, forward_with

Probs = dict[str, torch.Tensor]
Chunks = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class HPMix:
    """The HP encoding in the form the updates need: expectations and per-basis probabilities."""

    lr: torch.Tensor  # E[lr]
    wd: torch.Tensor  # E[wd]
    optimizer: dict[str, torch.Tensor]
    loss: dict[str, torch.Tensor]
    augment: dict[str, torch.Tensor]
    lr_probs: torch.Tensor
    wd_probs: torch.Tensor

    @classmethod
    def from_probs(cls, space: SearchSpace, probs: Probs) -> HPMix:
        """Build from the probability vectors of the hyper-parameter choices."""

        def expect(name: str) -> torch.Tensor:
            bases = torch.tensor(
                [float(v) for v in space.hparam(name).candidates], device=probs[name].device
            )
            return (probs[name] * bases).sum()

        def per_basis(name: str) -> dict[str, torch.Tensor]:
            return dict(zip(space.hparam(name).labels, probs[name], strict=True))

        return cls(
            expect("learning_rate"),
            expect("weight_decay"),
            per_basis("optimizer"),
            per_basis("loss"),
            per_basis("augment"),
            probs["learning_rate"],
            probs["weight_decay"],
        )


def augmented_chunks(
    x: torch.Tensor,
    y: torch.Tensor,
    policies: tuple[str, ...],
    scale: float,
    gen: torch.Generator,
    same: bool = False,
) -> Chunks:
    """One chunk per augmentation basis, that basis applied to it: the batch split into as many
    parts, or (`same`) its first part under every basis, so the bases differ only by augmentation.
    Either way the chunks hold the batch's size in all."""
    if same:
        part = max(1, len(x) // len(policies))
        return [(augment(x[:part], policy, scale, gen), y[:part]) for policy in policies]
    return [
        (augment(xc, policy, scale, gen), yc)
        for policy, xc, yc in zip(
            policies, x.tensor_split(len(policies)), y.tensor_split(len(policies)), strict=True
        )
    ]


def first_iteration(
    net: nn.Module,
    flat: FlatWeights,
    state: hp.State,
    chunks: Chunks,
    arch: Arch,
    mix: HPMix,
    grad_clip: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """Update W in place from the training loss of the combined model, with encoding-combined HPs.

    `reduce` (when given) averages the raw gradient across search workers before clipping.
    """
    x, y = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
    weight = torch.cat(
        [
            p.detach().expand(len(c[1])) / max(1, len(c[1]))
            for p, c in zip(mix.augment.values(), chunks, strict=True)
        ]
    )
    with autocast(x.device):
        logits = net(x, detached(arch))
    ce, uniform = hp.per_example_losses(logits, y)
    per_example = sum(p.detach() * hp.basis_loss(ce, uniform, name) for name, p in mix.loss.items())
    loss = (per_example * weight).sum()
    grad = flat.flat_grad(loss)
    grad = clip(reduce(grad) if reduce is not None else grad, grad_clip)
    w = flat.get()
    update, states = torch.zeros_like(w), []
    for name, p in mix.optimizer.items():
        d, new_state = hp.direction(name, grad, state)
        update += float(p.detach()) * d
        states.append(new_state)
    lr, wd = float(mix.lr.detach()), float(mix.wd.detach())
    flat.set(w - lr * update - lr * wd * w)
    hp.commit(state, states)
    return float(loss.detach())


def chunk_gradients(
    net: nn.Module,
    flat: FlatWeights,
    chunks: Chunks,
    arch: Probs,
    losses: list[str],
    grad_clip: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    update_stats: bool = False,
) -> tuple[dict[tuple[str, int], torch.Tensor], float]:
    """g_{l,a} for every (loss basis, augmentation chunk) at W, and the chunks' mean cross-entropy.

    One forward per chunk and two backward passes (cross-entropy and the uniform-target loss: every
    label-smoothing basis is linear in the two). `update_stats`: a training-mode forward of the
    module itself, so batch-norm running statistics move as in a first iteration; else they stay.
    `reduce` (when given) averages the raw gradients across search workers before clipping, in one
    call, so every worker builds the temporary weights one worker would build from the whole batch.
    """
    arch = {k: v.detach() for k, v in arch.items()}
    smoothing = {name: hp.label_smoothing(name) for name in losses}
    need_uniform = any(
        eps > 0 for eps in smoothing.values()
    )  # nas mode: cross-entropy only, one pass
    raw, mean_ce = [], 0.0
    for x, y in chunks:
        with autocast(x.device):
            logits = net(x, arch) if update_stats else forward_with(net, flat, None, x, arch)
        ce, uniform = hp.per_example_losses(logits, y)
        g_ce = flat.flat_grad(ce.mean(), retain_graph=need_uniform)
        g_u = flat.flat_grad(uniform.mean()) if need_uniform else torch.zeros_like(g_ce)
        raw.append(torch.stack([g_ce, g_u]))
        mean_ce += float(ce.detach().mean()) / len(chunks)
    stacked = torch.stack(raw)  # [chunks, 2, params]
    if reduce is not None:
        stacked = reduce(stacked)
    grads = {}
    for a, (g_ce, g_u) in enumerate(stacked):
        for name, eps in smoothing.items():
            grads[(name, a)] = clip(g_ce * (1 - eps) + g_u * eps, grad_clip)
    return grads, mean_ce


def combine_fast(
    w: torch.Tensor, grads: dict[tuple[str, int], torch.Tensor], state: hp.State, mix: HPMix
) -> torch.Tensor:
    """W' in closed form from the shared gradients (differentiable in the HP encoding)."""
    augment_p = list(mix.augment.values())
    step = torch.zeros_like(w)
    for opt, p_opt in mix.optimizer.items():
        for (loss, a), g in grads.items():
            d, _ = hp.direction(opt, g, state)
            step = step + (p_opt * mix.loss[loss] * augment_p[a]) * d
    return w - mix.lr * step - mix.lr * mix.wd * w


def combine_explicit(
    net: nn.Module,
    flat: FlatWeights,
    chunks: Chunks,
    arch: Probs,
    state: hp.State,
    space: SearchSpace,
    mix: HPMix,
    grad_clip: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Explicit path: one temporary W_b per basis set of the Cartesian product, and their P^H sum
    (`reduce`: as in `chunk_gradients`)."""
    arch = {k: v.detach() for k, v in arch.items()}
    w = flat.get()
    lrs = [float(v) for v in space.hparam("learning_rate").candidates]
    wds = [float(v) for v in space.hparam("weight_decay").candidates]
    combined, bases = torch.zeros_like(w), []
    product = itertools.product(
        enumerate(lrs), enumerate(wds), mix.optimizer, mix.loss, range(len(chunks))
    )
    for (i, lr), (j, wd), opt, loss, a in product:
        x, y = chunks[a]
        with autocast(x.device):
            logits = forward_with(net, flat, None, x, arch)
        ce, uniform = hp.per_example_losses(logits, y)
        grad = flat.flat_grad(hp.basis_loss(ce, uniform, loss).mean())
        grad = clip(reduce(grad) if reduce is not None else grad, grad_clip)
        d, _ = hp.direction(opt, grad, state)
        w_b = w - lr * d - lr * wd * w
        p_b = (
            mix.lr_probs[i]
            * mix.wd_probs[j]
            * mix.optimizer[opt]
            * mix.loss[loss]
            * list(mix.augment.values())[a]
        )
        combined = combined + p_b * w_b
        bases.append(w_b)
    return combined, bases


def validation_objective(
    net: nn.Module,
    flat: FlatWeights,
    w_prime: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    arch: Probs,
) -> torch.Tensor:
    """Validation loss of the second combined model (weights W', architecture mixed by P^A)."""
    with autocast(x.device):
        logits = forward_with(net, flat, w_prime, x, arch)
    return torch.nn.functional.cross_entropy(logits.to(w_prime.dtype), y)

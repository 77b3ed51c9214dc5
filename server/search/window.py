"""The longer-horizon hyper-parameter signal: the second iteration over a window of K steps.

One step ahead, every regulariser looks harmful and a small learning rate looks safest (short-horizon
bias), whatever helps over a training. So instead of one temporary step from W, the temporary weights of
basis set b are K steps long: ``W_b(K) = W_0 - sum_k lr_b (d_{o_b}(g_{l_b,a_b,k}) + wd_b W_k)``, and
their P^H-combination is, in closed form,

    W'(K) = W_0 - E[lr] sum_{o,l,a} P_o P_l P_a D_{o,l,a} - E[lr] E[wd] S,

with ``D_{o,l,a} = sum_k d_o(g_{l,a,k})`` and ``S = sum_k W_k``. The gradients g of each step are taken
along W's own trajectory and treated as constants of the encodings (first-order, as in the one-step
form), and the encodings stay fixed inside a window, so W'(K) *is* where the first iterations took W:
the K-step look-ahead costs two backward passes per step instead of a second forward-backward, and
the validation loss of W'(K) (over K validation batches' worth of examples) updates both encodings
once per window. `hp_signal="one-step"` keeps the patent's one-step form (the ablation).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.iterations import Chunks, HPMix, Probs, chunk_gradients
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.weights import FlatWeights

#: (optimizer basis, loss basis, augmentation chunk index)
Basis = tuple[str, str, int]
Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Window:
    """What the first iterations of one window accumulate: W at its start, D per basis and S."""

    start: torch.Tensor
    directions: dict[Basis, torch.Tensor]
    decay: torch.Tensor
    steps: int = 0

    @classmethod
    def open(cls, w: torch.Tensor, bases: list[Basis]) -> Window:
        """An empty window starting at weights `w`."""
        return cls(w.clone(), {b: torch.zeros_like(w) for b in bases}, torch.zeros_like(w))

    def state_dict(self) -> dict[str, object]:
        """Tensors and the step count, for the search checkpoint."""
        return {
            "start": self.start,
            "directions": [[list(b), d] for b, d in self.directions.items()],
            "decay": self.decay,
            "steps": self.steps,
        }

    @classmethod
    def from_state(cls, state: dict[str, object], device: torch.device) -> Window:
        """Inverse of `state_dict`."""
        directions = {
            (str(b[0]), str(b[1]), int(b[2])): d.to(device)
            for b, d in state["directions"]  # type: ignore[attr-defined]
        }
        start, decay = state["start"], state["decay"]
        assert isinstance(start, torch.Tensor) and isinstance(decay, torch.Tensor)
        return cls(start.to(device), directions, decay.to(device), int(state["steps"]))  # type: ignore[call-overload]


def bases(space: SearchSpace) -> list[Basis]:
    """Every (optimizer, loss, augmentation) basis whose K-step direction a window accumulates."""
    optimizers = [str(o) for o in space.hparam("optimizer").candidates]
    losses = [str(v) for v in space.hparam("loss").candidates]
    chunks = range(len(space.hparam("augment").candidates))
    return list(itertools.product(optimizers, losses, chunks))


def window_step(
    net: nn.Module,
    flat: FlatWeights,
    state: hp.State,
    chunks: Chunks,
    arch: Probs,
    mix: HPMix,
    grad_clip: float,
    window: Window,
    reduce: Reduce | None = None,
) -> float:
    """A first iteration that also feeds the window (see `advance`); returns the training loss."""
    losses = list(mix.loss)
    grads, train_loss = chunk_gradients(
        net, flat, chunks, arch, losses, grad_clip, reduce, update_stats=True
    )
    flat.set(advance(window, flat.get(), grads, state, mix))
    return train_loss


def advance(
    window: Window,
    w: torch.Tensor,
    grads: dict[tuple[str, int], torch.Tensor],
    state: hp.State,
    mix: HPMix,
) -> torch.Tensor:
    """W after one step ``W - E[lr] sum P_o P_l P_a d_o(g_{l,a}) - E[lr] E[wd] W``, with every basis
    direction added to D and W to S; each optimizer's state advances (in place) on the
    encoding-mixed gradient ``sum P_l P_a g_{l,a}``."""
    p_aug = [float(p.detach()) for p in mix.augment.values()]
    step = torch.zeros_like(w)
    for (opt, loss, a), total in window.directions.items():
        d, _ = hp.direction(opt, grads[(loss, a)], state)
        total += d
        step += float(mix.optimizer[opt].detach()) * float(mix.loss[loss].detach()) * p_aug[a] * d
    window.decay += w
    window.steps += 1
    mixed = sum(float(mix.loss[loss].detach()) * p_aug[a] * g for (loss, a), g in grads.items())
    assert isinstance(mixed, torch.Tensor), "a window has loss and augmentation bases"
    hp.commit(state, [hp.direction(opt, mixed, state)[1] for opt in mix.optimizer])
    lr, wd = float(mix.lr.detach()), float(mix.wd.detach())
    return w - lr * step - lr * wd * w


def window_weights(window: Window, mix: HPMix) -> torch.Tensor:
    """W'(K) in closed form, differentiable in the HP encoding (its value: where W is now)."""
    p_aug = list(mix.augment.values())
    step = torch.zeros_like(window.start)
    for (opt, loss, a), d in window.directions.items():
        step = step + (mix.optimizer[opt] * mix.loss[loss] * p_aug[a]) * d
    return window.start - mix.lr * step - mix.lr * mix.wd * window.decay


def window_weights_explicit(
    window: Window, space: SearchSpace, mix: HPMix
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """W'(K) from every basis set's own K-step temporary weights W_b(K), combined by P^H (the check
    on the closed form), and those W_b(K)."""
    lrs = [float(v) for v in space.hparam("learning_rate").candidates]
    wds = [float(v) for v in space.hparam("weight_decay").candidates]
    p_aug = list(mix.augment.values())
    combined, each = torch.zeros_like(window.start), []
    for (i, lr), (j, wd), ((opt, loss, a), d) in itertools.product(
        enumerate(lrs), enumerate(wds), window.directions.items()
    ):
        w_b = window.start - lr * d - lr * wd * window.decay
        p_b = mix.lr_probs[i] * mix.wd_probs[j] * mix.optimizer[opt] * mix.loss[loss] * p_aug[a]
        combined = combined + p_b * w_b
        each.append(w_b)
    return combined, each

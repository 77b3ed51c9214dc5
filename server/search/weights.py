"""Flat views of the shared weights W and forwards of the SuperModel with substituted weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call


class FlatWeights:
    """Maps between a module's parameters and one flat vector (the optimizer math works on vectors)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.params = [p for _, p in module.named_parameters()]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]

    def get(self) -> torch.Tensor:
        """W as a detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def set(self, flat: torch.Tensor) -> None:
        """Write a flat vector into the module's parameters."""
        with torch.no_grad():
            for p, chunk in zip(self.params, flat.split(self.sizes), strict=True):
                p.copy_(chunk.view_as(p))

    def as_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A name -> tensor dict of views into `flat` (keeps `flat`'s autograd graph)."""
        chunks = flat.split(self.sizes)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes, strict=True)}

    def flat_grad(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d loss / d W as a flat vector (zeros for parameters the loss does not reach)."""
        grads = torch.autograd.grad(loss, self.params, retain_graph=retain_graph, allow_unused=True)
        return torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1).to(p.dtype)
                for p, g in zip(self.params, grads, strict=True)
            ]
        )


def forward_with(
    module: nn.Module, flat: FlatWeights, weights: torch.Tensor | None, *args: object
) -> torch.Tensor:
    """Call `module(*args)` with weights `weights` (or its own when None) and copies of its buffers,
    so batch-norm running statistics are left exactly as they were."""
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    params = (
        dict(zip(flat.names, flat.params, strict=True))
        if weights is None
        else flat.as_dict(weights)
    )
    out: torch.Tensor = functional_call(module, {**params, **buffers}, args)
    return out


def clip(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale `grad` so that its norm is at most `max_norm` (0 disables)."""
    if max_norm <= 0:
        return grad
    norm = grad.norm()
    return grad * torch.clamp(max_norm / (norm + 1e-12), max=1.0)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA, a no-op elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iterate(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """Consecutive slices of `x` of at most `size` rows (evaluation in bounded memory)."""
    for start in range(0, len(x), size):
        yield x[start : start + size]

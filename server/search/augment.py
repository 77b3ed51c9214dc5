"""Augmentation policies per modality: the categorical bases of the `augment` hyper-parameter.

They act on raw batches on the training device and draw from an explicit generator, so a search is
reproducible and resumable.
"""

from __future__ import annotations

import torch

#: policy names per modality (the first one is always "none")
POLICIES: dict[str, tuple[str, ...]] = {
    "signal": ("none", "shift", "shift_noise", "shift_noise_shear"),
    "image": ("none", "shift", "shift_noise"),
    "tabular": ("none", "noise", "dropout"),
}
NOISE = 0.05  # noise standard deviation, as a fraction of the data's standard deviation


def augment(x: torch.Tensor, policy: str, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Apply `policy` to batch `x` ([n, *shape]); `scale` is the data's standard deviation."""
    if policy == "none" or len(x) == 0:
        return x
    if policy == "shift":
        return _shift(x, gen)
    if policy == "shift_noise":
        return _jitter(_shift(x, gen), scale, gen)
    if policy == "shift_noise_shear":
        return _shear(_jitter(_shift(x, gen), scale, gen), scale, gen)
    if policy == "noise":
        return x + _randn(x, gen) * (2 * NOISE * scale)
    if policy == "dropout":
        keep = torch.rand(x.shape, generator=gen, device=x.device) > 0.1
        return x * keep
    raise ValueError(f"unknown augmentation policy {policy!r}")


def _randn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def _jitter(x: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Random amplitude scaling (0.85-1.15) and additive Gaussian noise."""
    shape = (len(x),) + (1,) * (x.dim() - 1)
    gain = 0.85 + 0.3 * torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype)
    return x * gain + _randn(x, gen) * (NOISE * scale)


def _shear(x: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Add a random linear trend along the signal (MNIST-1D's generator shears its signals too)."""
    slope = (torch.rand((len(x), 1, 1), generator=gen, device=x.device, dtype=x.dtype) - 0.5) * (
        0.5 * scale
    )
    return x + slope * torch.linspace(-1.0, 1.0, x.shape[-1], device=x.device, dtype=x.dtype)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Signals: random circular shift by up to a quarter of the length (MNIST-1D translates
    circularly). Images: random translation by up to an eighth of the side, zero filled (no flips)."""
    if x.dim() == 3:
        length = x.shape[-1]
        offsets = torch.randint(
            -(length // 4), length // 4 + 1, (len(x), 1, 1), generator=gen, device=x.device
        )
        index = (torch.arange(length, device=x.device) + offsets) % length
        return x.gather(2, index.expand_as(x))
    height, width = x.shape[-2:]
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    padded = torch.nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h))
    dy = torch.randint(0, 2 * pad_h + 1, (len(x),), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad_w + 1, (len(x),), generator=gen, device=x.device)
    rows = (torch.arange(height, device=x.device) + dy[:, None])[:, None, :, None]
    cols = (torch.arange(width, device=x.device) + dx[:, None])[:, None, None, :]
    rows = rows.expand(len(x), x.shape[1], height, padded.shape[-1])
    out = padded.gather(2, rows)
    return out.gather(3, cols.expand(len(x), x.shape[1], height, width))

"""The data layout of a dataset's examples: tabular `[F]`, 1-D signal `[C, L]` or image `[C, H, W]`.

The layout is given (`--layout`, the `.npz`'s `layout` array, a task's `layout`) or guessed from the
rank of one example; a guess that could as well be another layout comes with a warning. Channels-last
arrays (`[n, L, C]`, `[n, H, W, C]`) are moved to channels first, which is what the models take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the layouts a dataset may declare ("auto": guessed from the rank of one example)
LAYOUTS = ("auto", "tabular", "signal", "image")
#: where the channel axis is ("": the `.npz`'s `channels` array if it has one, else first)
CHANNELS = ("", "first", "last")
#: the rank of one example, channels first, in each layout
RANK = {"tabular": 1, "signal": 2, "image": 3}
#: a guess is called ambiguous beyond these: many features may be a signal, many channels a mistake
MANY_FEATURES = 32
MANY_CHANNELS = 16
SHAPE_RULES = (
    "tabular [n, F]; signal [n, L] (one channel), [n, C, L] or [n, L, C] with --channels last; "
    "image [n, H, W] (one channel), [n, C, H, W] or [n, H, W, C] with --channels last"
)


@dataclass(frozen=True)
class Arranged:
    """Examples moved to channels first, with the layout they are read as and how it was chosen."""

    x: np.ndarray
    layout: str
    source: str  # "given" or "guessed from the shape"
    warning: str = ""


def check_layout(layout: str, channels: str) -> None:
    """Raise ValueError unless `layout` and `channels` are known values."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 'first' or 'last', got {channels!r}")


def arrange(x: np.ndarray, layout: str = "auto", channels: str = "first") -> Arranged:
    """`x` [n, ...] as `layout` (guessed when "auto"), channels first; ValueError if it cannot be."""
    check_layout(layout, channels)
    if layout == "auto":
        guessed = {2: "tabular", 3: "signal", 4: "image"}.get(x.ndim)
        if guessed is None:
            raise ValueError(f"x is {list(x.shape)}: expected {SHAPE_RULES}")
        arranged = _as(x, guessed, channels)
        warning = ambiguity(x.shape, channels or "first")
        return Arranged(arranged, guessed, "guessed from the shape", warning)
    return Arranged(_as(x, layout, channels), layout, "given")


def _as(x: np.ndarray, layout: str, channels: str) -> np.ndarray:
    n = x.shape[0]
    if layout == "tabular":
        return x.reshape(n, -1)
    rank = RANK[layout]
    if x.ndim == rank:  # one channel, no channel axis
        return x[:, None]
    if x.ndim != rank + 1:
        raise ValueError(f"x is {list(x.shape)}, which is not a {layout}: expected {SHAPE_RULES}")
    if channels == "last":
        return np.moveaxis(x, -1, 1)
    return x


def ambiguity(shape: tuple[int, ...], channels: str) -> str:
    """A warning when `shape` ([n, ...]) read by its rank could as well be another layout, else ""."""
    dims = list(shape[1:])
    shown = "[n, " + ", ".join(map(str, dims)) + "]"
    if len(dims) == 1 and dims[0] >= MANY_FEATURES:
        return (
            f"x {shown} is read as tabular ({dims[0]} features, an MLP); if each row is a "
            "1-D signal, say so with --layout signal (or a `layout` array in the .npz); "
            "--layout tabular silences this"
        )
    if len(dims) < 2 or channels == "last" or dims[0] <= 4:
        return ""
    kind = "signal" if len(dims) == 2 else "image"
    read_as = (
        f"x {shown} is read as {'a' if kind == 'signal' else 'an'} {kind} with {dims[0]} channels"
    )
    silence = f"--layout {kind} --channels first silences this"
    if dims[-1] <= 4:
        return f"{read_as}; if the channel axis is last, pass --channels last; {silence}"
    if kind == "signal" and dims[0] > MANY_CHANNELS:
        return f"{read_as}; if these are one-channel images, pass --layout image; {silence}"
    return ""

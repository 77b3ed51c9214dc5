"""Dead candidates: architecture candidates that compute exactly what another candidate computes.

Two kinds: width fractions that round to the same channel count as a smaller fraction, and kernels
that reach beyond the feature map (below).

A depthwise kernel of size k (padding k // 2) on a feature map of n positions per side reaches at most
n - 1 positions away from the centre, so every tap beyond that multiplies padding zeros: on a 2x2 map,
kernels 3, 5 and 7 give the same output, their logits get an identically zero gradient, and the
encoding stays uniform whatever the data say. Such candidates are dropped from the space before the
search (the smallest of each equivalent group stays: same function, fewest parameters), and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from typing import TypeVar

from autohas_edge.server.search.models import Layout, channels_at
from autohas_edge.server.search.space import Choice, SearchSpace, Value

log = logging.getLogger(__name__)
T = TypeVar("T", int, float)


def block_input_sizes(layout: Layout, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Spatial size of the feature map entering each block (conv families; [] for mlp)."""
    if layout.family == "mlp":
        return []
    size = tuple(input_shape[1:])
    size = tuple(_conv_out(n, layout.stem_kernel, layout.stem_stride) for n in size)
    sizes = []
    for spec in layout.blocks:
        sizes.append(size)
        size = tuple(_conv_out(n, 3, spec.stride) for n in size)  # odd kernels: same size for all
    return sizes


def _conv_out(n: int, kernel: int, stride: int) -> int:
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


def effective_kernel(kernel: int, size: tuple[int, ...]) -> tuple[int, ...]:
    """The taps of a `kernel` that can touch data on a map of `size`, per spatial dimension."""
    return tuple(min(kernel, 2 * n - 1) for n in size)


def prune_dead_candidates(
    space: SearchSpace, layout: Layout, input_shape: tuple[int, ...]
) -> tuple[SearchSpace, dict[str, list[str]]]:
    """The space without dead kernel candidates, and choice name -> the dropped candidate labels."""
    sizes = block_input_sizes(layout, input_shape)
    dropped: dict[str, list[str]] = {}
    arch = []
    for choice in space.arch:
        kept: tuple[Value, ...] | None = _live_kernels(choice, sizes)
        if kept is None:
            kept = _live_widths(choice, layout)
        if kept is not None and len(kept) < len(choice):
            dropped[choice.name] = [str(c) for c in choice.candidates if c not in kept]
            choice = replace(choice, candidates=kept)
        arch.append(choice)
    for name, labels in dropped.items():
        log.warning(
            "dropped candidates %s of %s: identical to a smaller candidate here "
            "(their gradient is identically zero)",
            labels,
            name,
        )
    return SearchSpace(tuple(arch), space.hparams), dropped


def smallest_of_each(candidates: Sequence[T], key: Callable[[T], Hashable]) -> tuple[T, ...]:
    """The smallest candidate of every group with the same `key` (what it computes), in the
    candidates' own order."""
    first: dict[Hashable, T] = {}
    for value in sorted(candidates, key=float):
        first.setdefault(key(value), value)
    kept = set(first.values())
    return tuple(c for c in candidates if c in kept)


def _index(choice: Choice, kind: str, count: int) -> int | None:
    """j of a `<letter><j>.<kind>` choice with j < count (None: not such a choice)."""
    prefix, _, suffix = choice.name.partition(".")
    if suffix != kind or not prefix[1:].isdigit() or int(prefix[1:]) >= count:
        return None
    return int(prefix[1:])


def _live_kernels(choice: Choice, sizes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """The candidates of a `b<j>.kernel` choice that differ from every smaller one (None: not one)."""
    block = _index(choice, "kernel", len(sizes))
    if block is None:
        return None
    kernels = [int(c) for c in choice.candidates]
    return smallest_of_each(kernels, lambda k: effective_kernel(k, sizes[block]))


def _live_widths(choice: Choice, layout: Layout) -> tuple[float, ...] | None:
    """The fractions of an `s<i>.width` choice with distinct channel counts (None: not one)."""
    stage = _index(choice, "width", len(layout.stage_channels))
    if stage is None:
        return None
    widest = layout.stage_channels[stage]
    fractions = [float(c) for c in choice.candidates]
    return smallest_of_each(fractions, lambda f: channels_at(widest, f))

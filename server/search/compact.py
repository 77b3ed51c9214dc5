"""The smallest model within k points of the best (`within_points`), chosen by fresh trainings.

The encodings rank architectures on shared weights, and the parameter penalty only acts above the
budget, so the derived model is the one the encodings like best under the budget, often near it.
A user who would give up a point of accuracy for a model half the size cannot say so to the
encodings. So, when asked (`within_points = k > 0`), the derived architecture and smaller ones the
same encodings prefer (derived again under budgets of a half and a quarter of its parameters: the
same argmax, then the cheapest moves by lost log-probability) each train from scratch with the race
winner's recipe, for the race's length, on the training split; the smallest whose validation
accuracy is within k points of the best of them is retrained. A validation split says little
about differences below its standard error (about one point per 2000 examples at 90% accuracy),
so k of 1 or more is what such a comparison can resolve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autohas_edge.server.search.derive import Encodings, Limit, derive_within
from autohas_edge.server.search.space import SearchSpace

#: the smaller architectures tried: derived under these fractions of the derived model's parameters
FRACTIONS = (0.5, 0.25)


@dataclass(frozen=True)
class Size:
    """One architecture of the comparison and how its race-length training did on validation."""

    arch: dict[str, Any]
    params: int
    val_accuracy: float
    val_loss: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded)."""
        return {
            "params": self.params,
            "val_accuracy": round(self.val_accuracy, 4),
            "val_loss": round(self.val_loss, 4),
            "architecture": self.arch,
        }


def smaller_archs(
    space: SearchSpace,
    encodings: Encodings,
    limits: list[Limit],
    params: Callable[[dict[str, Any]], float],
    derived: dict[str, Any],
    max_skips: int,
) -> list[dict[str, Any]]:
    """Architectures the encodings prefer under `FRACTIONS` of `derived`'s parameters (and the
    search's own `limits`), each strictly smaller than the one before; the ones that exist."""
    found: list[dict[str, Any]] = []
    size = params(derived)
    for fraction in FRACTIONS:
        cap = Limit("within_points", size * fraction, params)
        try:
            arch, _ = derive_within(space, encodings, [*limits, cap], max_skips)
        except ValueError:  # the space holds nothing that small
            break
        if params(arch) < params(found[-1] if found else derived):
            found.append(arch)
    return found


def pick(sizes: list[Size], within_points: float) -> Size:
    """The smallest of `sizes` whose validation accuracy is within `within_points` points of the
    best; among equal sizes the more accurate, then the earlier."""
    if not sizes:
        raise ValueError("pick needs at least one size")
    best = max(s.val_accuracy for s in sizes)
    close = [s for s in sizes if s.val_accuracy >= best - within_points / 100 - 1e-12]
    return min(close, key=lambda s: (s.params, -s.val_accuracy))

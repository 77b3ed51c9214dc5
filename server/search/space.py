"""Search-space values: categorical and basis-discretised continuous choices, frozen and validated.

A choice's encoding is a probability vector over its candidates (softmax of its logits). A categorical
choice derives to its most probable candidate, a continuous one to the probability-weighted sum of its
basis values (claims 12-13).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CATEGORICAL = "categorical"
CONTINUOUS = "continuous"

Value = int | float | str


@dataclass(frozen=True)
class Choice:
    """One searchable decision: a unique name, its candidates (or basis values) and its kind."""

    name: str
    candidates: tuple[Value, ...]
    kind: str = CATEGORICAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if not self.name:
            raise ValueError("a choice needs a non-empty name")
        if self.kind not in (CATEGORICAL, CONTINUOUS):
            raise ValueError(
                f"choice {self.name!r}: kind must be {CATEGORICAL!r} or {CONTINUOUS!r}"
            )
        if not self.candidates:
            raise ValueError(f"choice {self.name!r} has no candidates")
        if len(set(self.labels)) != len(self.candidates):
            raise ValueError(
                f"choice {self.name!r} has duplicate candidates {list(self.candidates)}"
            )
        if self.kind == CONTINUOUS and not all(_is_finite_number(c) for c in self.candidates):
            raise ValueError(f"continuous choice {self.name!r} needs finite numeric bases")

    @property
    def labels(self) -> tuple[str, ...]:
        """Candidate labels as they appear in encodings and plots."""
        return tuple(str(c) for c in self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def derive(self, probs: Sequence[float]) -> Value:
        """Argmax for a categorical choice, probability-weighted basis sum for a continuous one."""
        if len(probs) != len(self.candidates):
            raise ValueError(
                f"choice {self.name!r}: {len(probs)} probabilities for {len(self)} candidates"
            )
        if self.kind == CONTINUOUS:
            return float(
                sum(float(p) * float(c) for p, c in zip(probs, self.candidates, strict=True))
            )
        best = max(range(len(probs)), key=lambda i: float(probs[i]))
        return self.candidates[best]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "candidates": list(self.candidates), "kind": self.kind}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Choice:
        """Inverse of `to_json`."""
        return cls(data["name"], tuple(data["candidates"]), data.get("kind", CATEGORICAL))


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SearchSpace:
    """Architecture choices and hyper-parameter choices; names are unique across both."""

    arch: tuple[Choice, ...]
    hparams: tuple[Choice, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", tuple(self.arch))
        object.__setattr__(self, "hparams", tuple(self.hparams))
        names = [c.name for c in self.choices]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate choice names in the search space: {duplicates}")
        if not self.choices:
            raise ValueError("the search space has no choices")

    @property
    def choices(self) -> tuple[Choice, ...]:
        """All choices, architecture first."""
        return self.arch + self.hparams

    def hparam(self, name: str) -> Choice:
        """The hyper-parameter choice called `name`."""
        for choice in self.hparams:
            if choice.name == name:
                return choice
        raise KeyError(f"no hyper-parameter choice {name!r}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "arch": [c.to_json() for c in self.arch],
            "hparams": [c.to_json() for c in self.hparams],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchSpace:
        """Inverse of `to_json`."""
        return cls(
            tuple(Choice.from_json(c) for c in data["arch"]),
            tuple(Choice.from_json(c) for c in data["hparams"]),
        )

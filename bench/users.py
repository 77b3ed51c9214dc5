"""Simulated device users whose data is shifted from the global distribution (no torch).

Each user sees mostly a few classes (label skew) and, unless unshifted, a per-user transformation of
the signal (gain, offset, time reversal or a circular shift): what one person's sensor or habits do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SHIFTS = ("none", "gain", "offset", "reverse", "roll")


@dataclass(frozen=True)
class User:
    """One simulated user: examples to fine-tune on and later examples to measure accuracy on."""

    user_id: str
    shift: str
    x_tune: np.ndarray
    y_tune: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


@lru_cache(maxsize=2)
def global_test_split(name: str = "mnist1d") -> tuple[np.ndarray, np.ndarray]:
    """The test split of a dataset the server can search on, as `[n, *input_shape]` float32 and int64."""
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        return np.asarray(data["x_test"], np.float32)[:, None, :], np.asarray(
            data["y_test"], np.int64
        )
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(12345).permutation(len(digits.target))
        test = np.sort(order[: round(0.2 * len(order))])  # the server's fixed digits test split
        return digits.images.astype(np.float32)[test][:, None], digits.target.astype(np.int64)[test]
    raise ValueError(f"no simulated users for dataset {name!r}")


def transform(x: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one user's shift to examples `[n, ...]` (the last axis is time or width)."""
    if shift == "none":
        return x.copy()
    if shift == "gain":
        return x * rng.uniform(1.6, 2.2)
    if shift == "offset":
        return x + rng.uniform(0.4, 0.7) * np.std(x)
    if shift == "reverse":
        return np.ascontiguousarray(x[..., ::-1])
    if shift == "roll":
        return np.roll(x, int(rng.integers(x.shape[-1] // 5, x.shape[-1] // 3)), axis=-1)
    raise ValueError(f"unknown shift {shift!r}; choose from {SHIFTS}")


def make_user(
    x: np.ndarray,
    y: np.ndarray,
    index: int,
    shift: str,
    n_tune: int = 120,
    n_eval: int = 200,
    favourite_classes: int = 4,
    skew: float = 0.8,
) -> User:
    """User `index`: `skew` of the examples from `favourite_classes` classes, then `shift` applied."""
    rng = np.random.default_rng(1000 + index)
    classes = int(y.max()) + 1
    favourites = rng.choice(classes, favourite_classes, replace=False)
    p = np.full(classes, (1 - skew) / (classes - favourite_classes))
    p[favourites] = skew / favourite_classes
    labels = rng.choice(classes, n_tune + n_eval, p=p)
    idx = np.array([rng.choice(np.flatnonzero(y == c)) for c in labels])
    xs = transform(x[idx], shift, rng).astype(np.float32)
    return User(
        f"user{index:02d}-{shift}",
        shift,
        xs[:n_tune],
        labels[:n_tune],
        xs[n_tune:],
        labels[n_tune:],
    )

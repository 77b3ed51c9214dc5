"""Simulated device users whose data is shifted from the global MNIST-1D distribution (numpy only).

Each user has a personal "style": the signal is scaled, offset and shifted in time, and the user draws
mostly from a few favourite classes (label skew). A few users also have a personal label convention
(two gestures swapped), which a global model cannot know and local fine-tuning can learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10
SIGNAL_LENGTH = 40


@dataclass(frozen=True)
class UserStyle:
    """How one user's data differs from the global distribution."""

    scale: float
    offset: float
    shift: int
    favourite_classes: tuple[int, ...]
    swapped: tuple[int, int] | None


@dataclass(frozen=True)
class SimulatedUser:
    """One simulated person: id, style, and their own examples (x: [n, 1, 40] float32, y: int64)."""

    user_id: str
    style: UserStyle
    x: np.ndarray
    y: np.ndarray


def make_mnist1d(seed: int = 0) -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline (no download): x [n, 40], y [n], x_test, y_test."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    return make_dataset(args)


def random_style(rng: np.random.Generator, swap_labels: bool) -> UserStyle:
    """Draw one user's style."""
    favourites = tuple(int(c) for c in rng.choice(NUM_CLASSES, size=4, replace=False))
    swapped = (favourites[0], favourites[1]) if swap_labels else None
    return UserStyle(
        scale=float(rng.uniform(0.6, 1.5)),
        offset=float(rng.uniform(-0.8, 0.8)),
        shift=int(rng.integers(-4, 5)),
        favourite_classes=favourites,
        swapped=swapped,
    )


def apply_style(x: np.ndarray, y: np.ndarray, style: UserStyle) -> tuple[np.ndarray, np.ndarray]:
    """Transform global examples (x [n, 40]) into this user's style; returns ([n, 1, 40], labels)."""
    shifted = np.roll(x, style.shift, axis=-1) * style.scale + style.offset
    labels = y.copy()
    if style.swapped is not None:
        a, b = style.swapped
        labels = np.where(y == a, b, np.where(y == b, a, y))
    return shifted[:, None, :].astype(np.float32), labels.astype(np.int64)


def skewed_indices(y: np.ndarray, style: UserStyle, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick n example indices, 80% from the user's favourite classes."""
    weights = np.where(np.isin(y, style.favourite_classes), 0.8 / 4, 0.2 / (NUM_CLASSES - 4))
    return rng.choice(len(y), size=n, replace=False, p=weights / weights.sum())


def make_population(
    num_users: int = 20,
    examples_per_user: int = 240,
    seed: int = 0,
    swap_fraction: float = 0.3,
) -> list[SimulatedUser]:
    """Simulate `num_users` users, each with their own shifted, label-skewed MNIST-1D examples."""
    if num_users < 1 or examples_per_user < 10:
        raise ValueError("need at least 1 user and 10 examples per user")
    data = make_mnist1d(seed)
    x = np.concatenate([data["x"], data["x_test"]])
    y = np.concatenate([data["y"], data["y_test"]])
    rng = np.random.default_rng(seed)
    users = []
    for i in range(num_users):
        style = random_style(rng, swap_labels=rng.random() < swap_fraction)
        idx = skewed_indices(y, style, examples_per_user, rng)
        ux, uy = apply_style(x[idx], y[idx], style)
        users.append(SimulatedUser(f"user-{i:02d}", style, ux, uy))
    return users

"""Simulated device users whose data is shifted from the global distribution (numpy only, no torch).

Two kinds, one per consumer:

- the demo's population (`make_population`): phones recording 3-axis accelerometer gestures
  (`gestures`: six gestures, `[3, 48]` windows); each user has a personal motion style (per-axis
  scale, sensor bias, a time shift and the device's tilt), draws mostly from a few favourite gestures
  (label skew), and a few have a personal label convention (two gestures swapped), which a global
  model cannot know and local fine-tuning can learn; besides the examples a device may upload, each
  user has `x_fresh`, recorded after the model shipped (other examples in the same style), to
  fine-tune on;
- the benchmarks' and the SDK tests' users (`make_user`): label skew plus one named shift of the
  signal (gain, offset, time reversal or a circular shift), with separate tuning and evaluation
  examples, drawn from the test split of a dataset the server searches on (`global_test_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autohas_edge.server.demo import gestures
from autohas_edge.server.search import load_dataset

NUM_CLASSES = len(gestures.GESTURES)
CHANNELS, SIGNAL_LENGTH = 3, gestures.LENGTH
LABEL_NAMES = tuple(gestures.GESTURES)
SHIFTS = ("none", "gain", "offset", "reverse", "roll")
FAVOURITES = 3  # gestures a user performs most (80% of their examples)


# -- the demo's population ----------------------------------------------------------------------


@dataclass(frozen=True)
class UserStyle:
    """How one user's data differs from the global distribution."""

    motion: gestures.Style
    favourite_classes: tuple[int, ...]
    swapped: tuple[int, int] | None


@dataclass(frozen=True)
class SimulatedUser:
    """One simulated person: id, style, and their own examples (x: [n, 3, 48] float32, y: int64).

    `x`/`y`: the examples the device may upload and its evaluation data; `x_fresh`/`y_fresh`: other
    examples in the same style, recorded after the global model shipped. The device fine-tunes on
    these: the global model was trained on the uploaded ones (where the user consented), so a
    held-out check on those would find little to improve.
    """

    user_id: str
    style: UserStyle
    x: np.ndarray
    y: np.ndarray
    x_fresh: np.ndarray
    y_fresh: np.ndarray


def random_style(rng: np.random.Generator, swap_labels: bool) -> UserStyle:
    """Draw one user's style."""
    motion = gestures.random_style(rng)
    favourites = tuple(int(c) for c in rng.choice(NUM_CLASSES, size=FAVOURITES, replace=False))
    swapped = (favourites[0], favourites[1]) if swap_labels else None
    return UserStyle(motion, favourites, swapped)


def skewed_labels(style: UserStyle, n: int, rng: np.random.Generator) -> np.ndarray:
    """n gestures to record, 80% from the user's favourites."""
    p = np.full(NUM_CLASSES, 0.2 / (NUM_CLASSES - FAVOURITES))
    p[list(style.favourite_classes)] = 0.8 / FAVOURITES
    return rng.choice(NUM_CLASSES, size=n, p=p)


def record(style: UserStyle, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n of this user's gesture windows and the labels they give them (swapped ones swapped)."""
    performed = skewed_labels(style, n, rng)
    x = np.stack([gestures.gesture_window(int(c), style.motion, rng) for c in performed])
    labels = performed.copy()
    if style.swapped is not None:
        a, b = style.swapped
        labels = np.where(performed == a, b, np.where(performed == b, a, performed))
    return x.astype(np.float32), labels.astype(np.int64)


def make_population(
    num_users: int = 20,
    examples_per_user: int = 240,
    seed: int = 0,
    swap_fraction: float = 0.3,
    fresh_per_user: int = 120,
) -> list[SimulatedUser]:
    """Simulate `num_users` users, each with their own styled, label-skewed gesture recordings.

    `fresh_per_user` more examples each (`x_fresh`), drawn from a generator of their own: the first
    `examples_per_user` are the same whatever `fresh_per_user` is.
    """
    if num_users < 1 or examples_per_user < 10 or fresh_per_user < 10:
        raise ValueError("need at least 1 user and 10 examples (and 10 fresh ones) per user")
    rng = np.random.default_rng(seed)
    users = []
    for i in range(num_users):
        style = random_style(rng, swap_labels=rng.random() < swap_fraction)
        ux, uy = record(style, examples_per_user, rng)
        fx, fy = record(style, fresh_per_user, np.random.default_rng([seed, i]))
        users.append(SimulatedUser(f"user-{i:02d}", style, ux, uy, fx, fy))
    return users


# -- the benchmarks' and the SDK tests' users ------------------------------------------------------


@dataclass(frozen=True)
class User:
    """One simulated user: examples to fine-tune on and later examples to measure accuracy on."""

    user_id: str
    shift: str
    x_tune: np.ndarray
    y_tune: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


def global_test_split(name: str = "mnist1d") -> tuple[np.ndarray, np.ndarray]:
    """The test split of a dataset the server can search on, as `[n, *input_shape]` float32 and int64."""
    if name not in ("mnist1d", "digits"):
        raise ValueError(f"no simulated users for dataset {name!r}")
    data = load_dataset(name)  # the fixed test split the server's searches report on
    return data.x_test, data.y_test


def transform(x: np.ndarray, shift: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one user's shift to examples `[n, ...]` (the last axis is time or width)."""
    if shift == "none":
        return x.copy()
    if shift == "gain":
        return x * float(rng.uniform(1.6, 2.2))
    if shift == "offset":
        return x + float(rng.uniform(0.4, 0.7) * np.std(x))
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

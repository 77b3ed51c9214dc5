"""Accelerometer-like gestures `[n, 3, L]`: six gestures, each person moving in their own way.

Every gesture is a smooth 3-axis acceleration template (a swipe, its reverse, a circle, a shake, a
lift, a double tap). Each example is drawn at its own tempo and start time, with amplitude jitter,
correlated and white sensor noise, and gravity on the device's tilted axis. Each simulated user has a
personal style: per-axis scale, offset (sensor bias), a time shift and a device tilt, so the same
gesture looks different from one person to the next. The demo's phones (`population`) and the
benchmark suite's sensor task (`bench.suite.tasks`) both draw from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LENGTH = 48  # samples per window (about one second at 48 Hz)
NUM_USERS = 24
Template = Callable[[np.ndarray], np.ndarray]


def _bump(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _swipe(t: np.ndarray) -> np.ndarray:
    x = _bump(t, 0.35, 0.08) - _bump(t, 0.65, 0.08)  # accelerate, then brake
    return np.stack([x, 0.2 * x, np.zeros_like(t)])


def _swipe_back(t: np.ndarray) -> np.ndarray:
    return -_swipe(t)


def _circle(t: np.ndarray) -> np.ndarray:
    window = _bump(t, 0.5, 0.22)
    signal: np.ndarray = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t), 0.1 * t])
    out: np.ndarray = signal * window
    return out


def _shake(t: np.ndarray) -> np.ndarray:
    window = _bump(t, 0.5, 0.2)
    signal: np.ndarray = np.stack([np.sin(8 * np.pi * t), 0.3 * np.sin(8 * np.pi * t + 1.0), 0 * t])
    out: np.ndarray = signal * window
    return out


def _lift(t: np.ndarray) -> np.ndarray:
    z = _bump(t, 0.4, 0.1) - 0.7 * _bump(t, 0.7, 0.12)
    return np.stack([0.1 * z, np.zeros_like(t), z])


def _double_tap(t: np.ndarray) -> np.ndarray:
    z = _bump(t, 0.4, 0.025) + _bump(t, 0.6, 0.025)
    return np.stack([np.zeros_like(t), 0.15 * z, -1.5 * z])


GESTURES: dict[str, Template] = {
    "swipe": _swipe,
    "swipe_back": _swipe_back,
    "circle": _circle,
    "shake": _shake,
    "lift": _lift,
    "double_tap": _double_tap,
}


@dataclass(frozen=True)
class Style:
    """How one user's recordings differ: per-axis scale and offset, a time shift, a device tilt."""

    scale: np.ndarray  # [3]
    offset: np.ndarray  # [3]
    shift: int
    gravity: np.ndarray  # [3], unit length


def random_style(rng: np.random.Generator) -> Style:
    """One user's style (ranges as the demo population's: scale 0.6-1.5, offset +-0.8, shift +-4)."""
    tilt = rng.normal(0, 0.3, 3) + np.array([0.0, 0.0, 1.0])
    return Style(
        scale=rng.uniform(0.6, 1.5, 3),
        offset=rng.uniform(-0.8, 0.8, 3),
        shift=int(rng.integers(-4, 5)),
        gravity=tilt / np.linalg.norm(tilt),
    )


def gesture_window(label: int, style: Style, rng: np.random.Generator) -> np.ndarray:
    """One window [3, LENGTH] of gesture `label` performed by a user with `style`."""
    tempo, start = rng.uniform(0.8, 1.25), rng.uniform(-0.12, 0.12)
    t = (np.linspace(0.0, 1.0, LENGTH) - 0.5) * tempo + 0.5 + start
    signal = list(GESTURES.values())[label](t) * rng.uniform(0.7, 1.3)
    drift = np.cumsum(rng.normal(0, 0.04, (3, LENGTH)), axis=1)  # correlated sensor noise
    signal = signal + drift + rng.normal(0, 0.08, (3, LENGTH)) + style.gravity[:, None]
    rolled: np.ndarray = np.roll(signal, style.shift, axis=1)
    out: np.ndarray = rolled * style.scale[:, None] + style.offset[:, None]
    return out


def make_gestures(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` examples (x [n, 3, LENGTH] float32, y [n] int64) from NUM_USERS users drawn with `seed`."""
    rng = np.random.default_rng(seed)
    styles = [random_style(rng) for _ in range(NUM_USERS)]
    y = rng.integers(0, len(GESTURES), n)
    users = rng.integers(0, NUM_USERS, n)
    x = np.stack([gesture_window(int(c), styles[u], rng) for c, u in zip(y, users, strict=True)])
    return x.astype(np.float32), y.astype(np.int64)

"""The suite's tasks, each defined once here and written to an `.npz` (`x, y, x_test, y_test`).

The same file serves the suite and a user: `autohas search --dataset bench/out/suite/<task>.npz`
searches exactly the data the suite measures. Everything is generated offline (or bundled with
scikit-learn) from fixed seeds, so a task is the same on every machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autohas_edge.server.demo.gestures import GESTURES, make_gestures

Arrays = dict[str, np.ndarray]
#: where the task files go (ignored by git; regenerated on demand)
TASK_DIR = Path(__file__).resolve().parents[1] / "out" / "suite"
#: bump when a generator changes, so stale files are not reused
VERSION = 1


@dataclass(frozen=True)
class Task:
    """A named benchmark task: what it is, and how to generate its arrays."""

    name: str
    description: str
    make: Callable[[], Arrays]


def _split(x: np.ndarray, y: np.ndarray, n_test: int, seed: int) -> Arrays:
    """A fixed random train/test split (test = the first `n_test` of a seeded permutation)."""
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


def _mnist1d_arrays(**changes: object) -> Arrays:
    """MNIST-1D from its own generator (no download), `changes` applied to its default arguments."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in changes.items():
        setattr(args, key, value)
    data = make_dataset(args)
    return {
        "x": np.asarray(data["x"], np.float32)[:, None, :],
        "y": np.asarray(data["y"], np.int64),
        "x_test": np.asarray(data["x_test"], np.float32)[:, None, :],
        "y_test": np.asarray(data["y_test"], np.int64),
    }


def mnist1d() -> Arrays:
    """The standard MNIST-1D: 4000 train / 1000 test (the same data as `--dataset mnist1d`)."""
    return _mnist1d_arrays()


def mnist1d_noisy(noise: float = 0.1) -> Arrays:
    """MNIST-1D small and noisy: 1000 train with `noise` of the labels flipped, 4000 clean test."""
    # a fresh draw (seed 43, not the standard 42) of 5000 examples, 20% of them for training
    arrays = _mnist1d_arrays(num_samples=5000, train_split=0.2, seed=43)
    rng = np.random.default_rng(43)
    y = arrays["y"].copy()
    flip = rng.random(len(y)) < noise
    y[flip] = (y[flip] + rng.integers(1, 10, int(flip.sum()))) % 10  # always another class
    return {**arrays, "y": y}


def gestures() -> Arrays:
    """Accelerometer-like gestures [n, 3, 48], six classes, 24 users: 2000 train / 2400 test."""
    x, y = make_gestures(4400, seed=7)
    return _split(x, y, 2400, seed=7)


def digits() -> Arrays:
    """scikit-learn's 8x8 digits as images [1, 8, 8], the same split as `--dataset digits`."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.images.astype(np.float32)[:, None], data.target.astype(np.int64)
    return _split(x, y, round(len(x) * 0.2), seed=12345)


def tabular() -> Arrays:
    """`make_classification`: 24 features (8 informative, 6 redundant, 10 noise), five imbalanced
    classes, 2% label noise: 2000 train / 2400 test."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=4400,
        n_features=24,
        n_informative=8,
        n_redundant=6,
        n_classes=5,
        n_clusters_per_class=2,
        weights=[0.4, 0.25, 0.15, 0.12, 0.08],
        flip_y=0.02,
        class_sep=0.8,
        random_state=11,
    )
    return _split(x.astype(np.float32), y.astype(np.int64), 2400, seed=11)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("mnist1d", "MNIST-1D, 4000 train / 1000 test", mnist1d),
        Task(
            "mnist1d-noisy", "MNIST-1D, 1000 train with 10% label noise / 4000 test", mnist1d_noisy
        ),
        Task("gestures", f"3-axis gestures [3, 48], {len(GESTURES)} classes, 24 users", gestures),
        Task("digits", "scikit-learn digits [1, 8, 8], 1438 train / 359 test", digits),
        Task("tabular", "make_classification, 24 features, 5 imbalanced classes", tabular),
    )
}


def task_path(name: str, root: Path = TASK_DIR) -> Path:
    """The task's `.npz`, generated on first use (written atomically, reused afterwards)."""
    path = root / f"{name}-v{VERSION}.npz"
    if path.is_file():
        return path
    arrays = TASKS[name].make()
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as bool
    tmp.replace(path)
    return path

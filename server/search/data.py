"""Datasets, offline only: MNIST-1D, scikit-learn's digits, or your own arrays in an `.npz` file.

The family of models follows from the rank of one example: `[F]` tabular (MLP), `[C, L]` 1-D signal
(conv1d), `[C, H, W]` image (conv2d).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autohas_edge.common.fs import atomic_write_npz

MODALITY_BY_RANK = {1: "tabular", 2: "signal", 3: "image"}
FAMILY_BY_MODALITY = {"tabular": "mlp", "signal": "conv1d", "image": "conv2d"}
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2  # only for an .npz without its own test split


@dataclass
class Dataset:
    """Train / validation / test splits as numpy arrays (x float32 [n, *input_shape], y int64)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    label_names: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, channels first."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def modality(self) -> str:
        """ "tabular", "signal" or "image"."""
        return MODALITY_BY_RANK[len(self.input_shape)]

    @property
    def family(self) -> str:
        """The model family for this modality: "mlp", "conv1d" or "conv2d"."""
        return FAMILY_BY_MODALITY[self.modality]

    def describe(self) -> dict[str, object]:
        """The `dataset` entry of result.json."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "label_names": list(self.label_names),
        }


def load_dataset(spec: str, seed: int = 0) -> Dataset:
    """Load "mnist1d", "digits" or an `.npz` path; the validation split is drawn with `seed`."""
    if spec == "mnist1d":
        x, y, x_test, y_test = mnist1d_arrays()
        names = [str(i) for i in range(10)]
    elif spec == "digits":
        x, y, x_test, y_test = _digits()
        names = [str(i) for i in range(10)]
    else:
        x, y, x_test, y_test, names = _npz(Path(spec))
        spec = Path(spec).stem
    num_classes = int(max(y.max(), y_test.max() if len(y_test) else 0)) + 1
    names = names or [str(i) for i in range(num_classes)]
    train, val = _split(len(x), VAL_FRACTION, seed)
    return Dataset(spec, x[train], y[train], x[val], y[val], x_test, y_test, num_classes, names)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_held = max(1, round(n * fraction))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


@functools.lru_cache(maxsize=4)
def mnist1d_arrays(
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D, generated offline: x [4000, 1, 40] float32, y int64, x_test [1000, 1, 40], y_test.

    `seed=None` is mnist1d's own default seed: the standard dataset every search and benchmark uses.
    Another seed draws another dataset of the same kind (the demo's simulated users). Each is
    generated once and cached on disk; callers share the arrays, so they must not write into them.
    """
    from importlib.metadata import version

    suffix = "" if seed is None else f"-seed{seed}"
    cache = _cache_dir() / f"mnist1d-{version('mnist1d')}{suffix}.npz"
    if cache.is_file():
        with np.load(cache) as arrays:
            return _mnist1d_tuple(arrays)
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if seed is not None:
        args.seed = seed
    data = make_dataset(args)
    arrays = {
        "x": np.asarray(data["x"], np.float32)[:, None, :],
        "y": data["y"].astype(np.int64),
        "x_test": np.asarray(data["x_test"], np.float32)[:, None, :],
        "y_test": data["y_test"].astype(np.int64),
    }
    with contextlib.suppress(OSError):  # a read-only home only costs the regeneration next time
        atomic_write_npz(cache, arrays, mode=0o644)
    return _mnist1d_tuple(arrays)


def _mnist1d_tuple(
    arrays: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]


def _cache_dir() -> Path:
    root = os.environ.get("AUTOHAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "autohas-edge"
    )
    return Path(root)


def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rest, test = _split(len(x), TEST_FRACTION, seed=12345)  # a fixed test split, like MNIST-1D's
    return x[rest], y[rest], x[test], y[test]


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zip, pickle and format errors all mean "not a usable .npz"
        raise ValueError(f"dataset file {path} is not a readable .npz: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"dataset file {path} has no array {key!r} (found {sorted(arrays)})")
    x, y = _checked(path, arrays["x"], arrays["y"], "x", "y")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"dataset file {path} must hold both x_test and y_test or neither")
    if "x_test" in arrays:
        x_test, y_test = _checked(path, arrays["x_test"], arrays["y_test"], "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"dataset file {path}: x_test examples are {x_test.shape[1:]}, x are {x.shape[1:]}"
            )
    else:
        rest, test = _split(len(x), TEST_FRACTION, seed=12345)
        x, y, x_test, y_test = x[rest], y[rest], x[test], y[test]
    names = [str(n) for n in arrays["label_names"].tolist()] if "label_names" in arrays else []
    num_classes = int(max(y.max(), y_test.max())) + 1
    if names and len(names) < num_classes:
        raise ValueError(f"dataset file {path}: {len(names)} label_names for {num_classes} classes")
    return x, y, x_test, y_test, names


def _checked(
    path: Path, x: np.ndarray, y: np.ndarray, xn: str, yn: str
) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim not in (2, 3, 4) or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"dataset file {path}: {xn} must be numeric [n, F], [n, C, L] or [n, C, H, W], "
            f"got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"dataset file {path}: {yn} must be 1-D with one label per row of {xn}, got {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise ValueError(
            f"dataset file {path}: {yn} must hold integer labels 0..C-1, got {y.dtype}"
        )
    if len(x) < 10:
        raise ValueError(f"dataset file {path}: {xn} has only {len(x)} examples (need at least 10)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"dataset file {path}: {xn} contains NaN or infinite values")
    return x, y.astype(np.int64)

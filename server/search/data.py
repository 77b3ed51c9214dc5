"""Datasets, offline only: MNIST-1D, scikit-learn's digits, or your own arrays in an `.npz` file.

The family of models follows from the layout of one example, channels first: `[F]` tabular (MLP),
`[C, L]` 1-D signal (conv1d), `[C, H, W]` image (conv2d); the layout is given or guessed (see `layout`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autohas_edge.common.fs import atomic_write_npz
from autohas_edge.server.search.labels import check_label_array, check_sizes, class_labels
from autohas_edge.server.search.layout import SHAPE_RULES, arrange, check_layout

MODALITY_BY_RANK = {1: "tabular", 2: "signal", 3: "image"}
FAMILY_BY_MODALITY = {"tabular": "mlp", "signal": "conv1d", "image": "conv2d"}
VAL_FRACTION = 0.1
TEST_FRACTION = 0.2  # only for an .npz without its own test split
BUILTIN = ("mnist1d", "digits")
#: larger inputs overflow batch norm's statistics in float32 (and are a unit mistake, not data)
MAX_ABS_VALUE = 1e9


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
    layout_source: str = "guessed from the shape"  # or "given", "the .npz's layout"
    notes: list[str] = field(default_factory=list)  # ambiguous guesses, remapped labels

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
            "layout": self.modality,
            "layout_source": self.layout_source,
            "family": self.family,
            "notes": list(self.notes),
        }


def load_dataset(spec: str, seed: int = 0, layout: str = "auto", channels: str = "") -> Dataset:
    """Load "mnist1d", "digits" or an `.npz` path; the validation split is drawn with `seed`.

    `layout` ("auto": the `.npz`'s `layout` array, else guessed from the shape) and `channels`
    ("": the `.npz`'s `channels` array, else "first") say how to read the examples (see `layout`).
    Raises ValueError naming the problem for data a search cannot learn from.
    """
    check_layout(layout, channels)
    if spec in BUILTIN:
        x, y, x_test, y_test = mnist1d_arrays() if spec == "mnist1d" else _digits()
        raw = _Raw(x, y, x_test, y_test, [str(i) for i in range(10)])
        name = spec
    else:
        raw = _npz(_dataset_file(spec))
        name = Path(spec).stem
    return _prepared(name, raw, seed, layout or "auto", channels, spec)


def _prepared(name: str, raw: _Raw, seed: int, layout: str, channels: str, spec: str) -> Dataset:
    """Arrange, check and split the arrays of one dataset."""
    where = "" if spec in BUILTIN else f"dataset file {spec}: "
    try:
        arranged = arrange(
            raw.x, raw.layout if layout == "auto" else layout, channels or raw.channels
        )
        x_test = arrange(raw.x_test, arranged.layout, channels or raw.channels).x
        labels = class_labels(raw.y, raw.y_test, raw.names, raw.num_classes)
        num_classes = raw.num_classes or len(labels.names)
        train, val = _split(len(raw.x), VAL_FRACTION, seed)
        check_sizes(labels.y, num_classes, len(x_test), labels.names)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None
    source = "the .npz's layout" if layout == "auto" and raw.layout != "auto" else arranged.source
    x, y = arranged.x, labels.y
    return Dataset(
        name,
        x[train],
        y[train],
        x[val],
        y[val],
        x_test,
        labels.y_test,
        num_classes,
        labels.names,
        layout_source=source,
        notes=[
            f"{kind}: {text}"
            for kind, text in (("warning", arranged.warning), ("note", labels.note))
            if text
        ],
    )


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


@dataclass
class _Raw:
    """A dataset's arrays as stored, before they are arranged, checked and split."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    names: list[str]
    layout: str = "auto"
    channels: str = "first"
    num_classes: int = 0  # fixed classes (a server task's); 0: from the labels


def _dataset_file(spec: str) -> Path:
    """The dataset file `spec` names, or a ValueError saying what it is instead."""
    path = Path(spec)
    if path.is_dir():
        raise ValueError(f"dataset {spec} is a directory, not a file (an .npz with x and y)")
    if path.is_file():
        return path
    close = difflib.get_close_matches(spec, BUILTIN, n=1, cutoff=0.5)
    if close or (path.suffix != ".npz" and "/" not in spec):
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(
            f"unknown dataset {spec!r}: {hint}the built-in datasets are {' and '.join(BUILTIN)}; "
            "anything else is a path to an .npz file"
        )
    raise ValueError(f"dataset file {path} does not exist")


def _npz(path: Path) -> _Raw:
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # an .npz is a zip archive
        raise ValueError(
            f"dataset file {path} is not an .npz (a zip of arrays, as numpy.savez writes it; "
            f"this file starts with {magic!r})"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zip and format errors, object arrays: not a usable .npz
        raise ValueError(
            f"dataset file {path} is not a readable .npz of numeric arrays: {exc}"
        ) from None
    try:
        return _raw(arrays)
    except ValueError as exc:
        raise ValueError(f"dataset file {path}: {exc}") from None


def _raw(arrays: dict[str, np.ndarray]) -> _Raw:
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"has no array {key!r} (found {sorted(arrays)})")
    x, y = _checked(arrays["x"], arrays["y"], "x", "y")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError("must hold both x_test and y_test or neither")
    if "x_test" in arrays:
        x_test, y_test = _checked(arrays["x_test"], arrays["y_test"], "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_test examples are {x_test.shape[1:]}, x are {x.shape[1:]}")
    else:
        rest, test = _split(len(x), TEST_FRACTION, seed=12345)
        x, y, x_test, y_test = x[rest], y[rest], x[test], y[test]
    names = [str(n) for n in arrays["label_names"].tolist()] if "label_names" in arrays else []
    layout, channels = _text(arrays, "layout", "auto"), _text(arrays, "channels", "first")
    check_layout(layout, channels)
    classes = int(arrays["num_classes"]) if "num_classes" in arrays else 0
    return _Raw(x, y, x_test, y_test, names, layout, channels, classes)


def _text(arrays: dict[str, np.ndarray], key: str, default: str) -> str:
    """A string array's value (e.g. np.array("signal")), or `default` when absent."""
    return str(arrays[key]) if key in arrays else default


def _checked(x: np.ndarray, y: np.ndarray, xn: str, yn: str) -> tuple[np.ndarray, np.ndarray]:
    if np.iscomplexobj(x):
        raise ValueError(
            f"{xn} is complex ({x.dtype}): take the magnitude or stack the real and imaginary "
            "parts as channels"
        )
    if x.ndim not in (2, 3, 4) or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{xn} must be numeric [n, ...], {SHAPE_RULES}; got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{yn} must be 1-D with one label per row of {xn}, got {y.shape}")
    check_label_array(y, yn)
    if len(x) < 10:
        raise ValueError(f"{xn} has only {len(x)} examples (need at least 10)")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ValueError(f"{xn} contains NaN or infinite values (or values beyond float32's range)")
    largest = float(np.abs(x32).max())
    if largest > MAX_ABS_VALUE:
        raise ValueError(
            f"{xn} holds values up to {largest:.3g} in magnitude (at most {MAX_ABS_VALUE:.0e}): "
            "rescale the data (e.g. to SI units or standard scores)"
        )
    return x32, y.astype(np.int64)

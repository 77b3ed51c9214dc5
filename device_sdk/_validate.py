"""Check and normalise what apps pass in: examples `x` and labels `y`."""

from __future__ import annotations

from typing import Any

import numpy as np

from autohas_edge.common.ids import check_id, id_to_component
from autohas_edge.device_sdk.errors import InvalidIdError, InvalidInputError, LabelError


def as_id(value: Any, what: str) -> str:
    """`value` if it is an id (common/ids.py), else InvalidIdError naming `what`."""
    try:
        return check_id(value, what)
    except ValueError as exc:
        raise InvalidIdError(str(exc)) from None


def id_component(value: Any, what: str = "id") -> str:
    """The directory name of an id (`id_to_component`), else InvalidIdError naming `what`."""
    try:
        return id_to_component(value, what)
    except ValueError as exc:
        raise InvalidIdError(str(exc)) from None


def as_examples(x: Any, input_shape: tuple[int, ...], what: str = "x") -> tuple[np.ndarray, bool]:
    """`x` as float32 `[n, *input_shape]` and whether it was one example (no batch dimension)."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InvalidInputError(
            f"{what} has dtype {arr.dtype}; expected real numbers (float32 preferred)"
        )
    single = arr.shape == input_shape
    if single:
        arr = arr[None]
    if arr.shape[1:] != input_shape or arr.ndim != len(input_shape) + 1:
        raise InvalidInputError(
            f"{what} has shape {np.shape(x)}; expected {input_shape} (one example) "
            f"or (n, {_dims(input_shape)})"
        )
    if len(arr) == 0:
        raise InvalidInputError(f"{what} holds no examples (shape {arr.shape})")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(
            f"{what} contains NaN or infinite values (or values too large for float32)"
        )
    return out, single


def as_labels(y: Any, n: int, num_classes: int) -> np.ndarray:
    """`y` as int64 `[n]`, every value a class index in `[0, num_classes)`."""
    arr = np.asarray(y)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise LabelError(f"labels have dtype {arr.dtype}; expected integer class indices")
    if arr.shape != (n,):
        raise LabelError(f"labels have shape {arr.shape}; expected ({n},), one per example")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise LabelError(
            f"labels {sorted(set(arr[bad].tolist()))[:5]} are outside [0, {num_classes})"
        )
    return arr.astype(np.int64)


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)

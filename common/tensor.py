"""The tensor codec of the wire format: which dtypes travel, and arrays <-> (dtype code, shape, bytes).

Tensors travel little-endian and row-major. The codes are the values of the `DType` enum of
proto/autohas/v1/personalization.proto (0 = unspecified); tests/proto checks that they agree, so
this module needs no protobuf.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: the element types examples may have, by numpy name
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name) for name in ("float32", "float16", "int8", "uint8", "int32")
}
#: dtype name -> its wire code
DTYPE_CODES: dict[str, int] = {"float32": 1, "float16": 2, "int8": 3, "uint8": 4, "int32": 5}
#: wire code -> dtype name
DTYPE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}
UNSPECIFIED = 0
MAX_RANK = 8


class TensorError(ValueError):
    """A tensor that cannot be encoded or decoded; `part` says which: "dtype", "shape" or "data"."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class WireTensor:
    """A tensor as it travels: dtype code, shape and little-endian row-major bytes."""

    dtype: int
    shape: tuple[int, ...]
    data: bytes


def dtype_code(name: str) -> int:
    """The wire code of a dtype name; TensorError naming the dtype when it cannot travel."""
    if name not in DTYPE_CODES:
        raise TensorError("dtype", f"dtype {name!r} cannot be sent (one of {', '.join(DTYPES)})")
    return DTYPE_CODES[name]


def dtype_name(code: int) -> str:
    """The dtype name of a wire code; TensorError naming the code when it is unspecified or unknown."""
    if code not in DTYPE_NAMES:
        what = "unspecified" if code == UNSPECIFIED else f"unknown dtype code {code}"
        raise TensorError("dtype", f"{what} dtype (one of {', '.join(DTYPES)})")
    return DTYPE_NAMES[code]


def encode_tensor(array: np.ndarray) -> WireTensor:
    """An array as a `WireTensor`; TensorError when its dtype cannot travel."""
    name = np.asarray(array).dtype.name
    code = dtype_code(name)
    data = np.ascontiguousarray(array, dtype=DTYPES[name].newbyteorder("<")).tobytes()
    return WireTensor(code, tuple(int(d) for d in np.shape(array)), data)


def decode_tensor(code: int, shape: Iterable[int], data: bytes) -> np.ndarray:
    """The read-only array a wire tensor holds; TensorError unless dtype, shape and byte count agree."""
    name = dtype_name(code)
    dims = tuple(int(d) for d in shape)
    if not 1 <= len(dims) <= MAX_RANK or min(dims) < 0:
        raise TensorError("shape", f"{list(dims)[:16]} is not 1-{MAX_RANK} sizes >= 0")
    wire = DTYPES[name].newbyteorder("<")
    expected = math.prod(dims) * wire.itemsize
    if len(data) != expected:
        raise TensorError("data", f"{len(data)} bytes, but {name} {list(dims)} needs {expected}")
    array = np.frombuffer(data, dtype=wire).reshape(dims)
    # a big-endian host gets its own byte order (a copy); a little-endian one a view of `data`
    return array if wire.isnative else array.astype(wire.newbyteorder("="))

"""The wire tensor codec: bit-exact round trips, little-endian bytes, clear errors on both sides."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autohas_edge.common.tensor import (
    DTYPE_CODES,
    DTYPES,
    TensorError,
    decode_tensor,
    encode_tensor,
)
from autohas_edge.device_sdk import _serde as sdk_serde
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.api import serde as server_serde
from autohas_edge.server.errors import InvalidArgument


def test_codes_are_the_proto_enum() -> None:
    enum = {name: pb.DType.Value(f"DTYPE_{name.upper()}") for name in DTYPES}
    assert enum == DTYPE_CODES
    assert set(pb.DType.values()) == {pb.DTYPE_UNSPECIFIED, *DTYPE_CODES.values()}


@settings(max_examples=60)
@given(
    dtype=st.sampled_from(list(DTYPES)),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_bit_exact(dtype: str, shape: list[int], seed: int) -> None:
    raw = np.random.default_rng(seed).bytes(int(np.prod(shape)) * DTYPES[dtype].itemsize)
    array = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    wire = encode_tensor(array)
    back = decode_tensor(wire.dtype, wire.shape, wire.data)
    assert back.dtype == array.dtype and back.shape == array.shape and back.tobytes() == raw
    # the server and the SDK speak the same codec
    sent = sdk_serde.tensor_to_proto(array)
    assert server_serde.tensor_from_proto(sent, "x").tobytes() == raw
    assert sdk_serde.tensor_from_proto(server_serde.tensor_to_proto(array)).tobytes() == raw


def test_bytes_are_little_endian() -> None:
    assert encode_tensor(np.array([1.0], dtype=">f4")).data == np.array([1.0], "<f4").tobytes()


@pytest.mark.parametrize("dtype", ["float64", "int64", "complex64", "bool"])
def test_an_unsendable_dtype_is_a_value_error_naming_it(dtype: str) -> None:
    with pytest.raises(ValueError, match=dtype):
        encode_tensor(np.zeros(2, dtype))
    with pytest.raises(ValueError, match=dtype):
        sdk_serde.tensor_to_proto(np.zeros(2, dtype))


@pytest.mark.parametrize(
    ("code", "shape", "data", "part", "message"),
    [
        (99, [1], b"\0" * 4, "dtype", "unknown dtype code 99"),
        (0, [1], b"\0" * 4, "dtype", "unspecified"),
        (1, [], b"", "shape", "sizes"),
        (1, [2, -1], b"", "shape", "sizes"),
        (1, [1] * 9, b"\0" * 4, "shape", "sizes"),
        (1, [2, 3], b"\0" * 23, "data", "23 bytes, but float32 \\[2, 3\\] needs 24"),
    ],
)
def test_a_malformed_tensor_is_refused_on_both_sides(
    code: int, shape: list[int], data: bytes, part: str, message: str
) -> None:
    with pytest.raises(TensorError, match=message) as info:
        decode_tensor(code, shape, data)
    assert info.value.part == part and isinstance(info.value, ValueError)
    tensor = pb.Tensor(dtype=code, shape=shape, data=data)
    with pytest.raises(ValueError, match=message):  # the SDK: KeyError before
        sdk_serde.tensor_from_proto(tensor)
    with pytest.raises(InvalidArgument, match=f"^features.{part}"):
        server_serde.tensor_from_proto(tensor, "features")


def test_a_decoded_tensor_is_read_only() -> None:
    wire = encode_tensor(np.arange(3, dtype=np.int32))
    assert not decode_tensor(wire.dtype, wire.shape, wire.data).flags.writeable

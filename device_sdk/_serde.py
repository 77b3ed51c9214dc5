"""Conversions between the SDK's values and the gRPC messages (proto/autohas/v1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from autohas_edge.common.tensor import DTYPE_NAMES, decode_tensor, encode_tensor
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb


@dataclass(frozen=True)
class TaskInfo:
    """What the server says about a task: the examples it takes and the consent purpose it needs."""

    task_id: str
    purpose: str
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int
    label_names: tuple[str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        """Inverse of `dataclasses.asdict` after a JSON round trip (lists back to tuples)."""
        return cls(
            d["task_id"],
            d["purpose"],
            tuple(d["input_shape"]),
            d["input_dtype"],
            int(d["num_classes"]),
            tuple(d["label_names"]),
        )


@dataclass(frozen=True)
class ConsentInfo:
    """One consent record of this device's user."""

    purpose: str
    text_version: str
    active: bool
    granted_at: float
    revoked_at: float | None


def tensor_to_proto(x: np.ndarray) -> pb.Tensor:
    """A numpy array as a little-endian row-major `Tensor`; ValueError naming an unsendable dtype."""
    wire = encode_tensor(x)
    return pb.Tensor(dtype=cast(pb.DType, wire.dtype), shape=list(wire.shape), data=wire.data)


def tensor_from_proto(t: pb.Tensor) -> np.ndarray:
    """Inverse of `tensor_to_proto`; ValueError unless its dtype, shape and byte count agree."""
    return decode_tensor(t.dtype, t.shape, t.data)


def task_from_proto(t: pb.Task) -> TaskInfo:
    """A `Task` message as a `TaskInfo`."""
    return TaskInfo(
        t.task_id,
        t.purpose,
        tuple(int(d) for d in t.input_shape),
        DTYPE_NAMES.get(t.input_dtype, "float32"),
        int(t.num_classes),
        tuple(t.label_names),
    )


def consent_from_proto(c: pb.Consent) -> ConsentInfo:
    """A `Consent` message as a `ConsentInfo`."""
    revoked = (
        c.revoked_at.ToSeconds() + c.revoked_at.nanos / 1e9 if c.HasField("revoked_at") else None
    )
    granted = c.granted_at.ToSeconds() + c.granted_at.nanos / 1e9
    return ConsentInfo(c.purpose, c.consent_text_version, bool(c.active), granted, revoked)

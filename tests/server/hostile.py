"""Hypothesis strategies for hostile requests: random and mutated messages of the API, and raw bytes.

Messages are built from the generated classes' descriptors, so every field of every request type is
covered, including out-of-range enum values, NaN doubles, extreme integers, odd strings and blobs.
Everything is sent as bytes over a raw channel (`channel.unary_unary(path)` with no serializers), so the
bytes need not be a valid message at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb

F = FieldDescriptor
MAX_DEPTH = 3
INT_EDGES = {
    F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    F.CPPTYPE_UINT32: (0, 2**32 - 1),
    F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
ODD_TEXT = (
    "",
    " ",
    "../../etc/passwd",
    "a" * 129,
    "\u0000",
    "\n",
    "é" * 70,
    "🙂",
    "%s%n",
    "'; DROP TABLE x;--",
    "x" * 5000,
)


@dataclass(frozen=True)
class Method:
    """One RPC of the API."""

    path: str
    input_class: type[Message]
    output_class: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        """The short method name, e.g. `UploadExamples`."""
        return self.path.rsplit("/", 1)[1]


def api_methods() -> list[Method]:
    """Every RPC of the autohas.v1 services."""
    return [
        Method(
            f"/{service.full_name}/{m.name}",
            GetMessageClass(m.input_type),
            GetMessageClass(m.output_type),
            m.client_streaming,
            m.server_streaming,
        )
        for service in pb.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    ]


def integers(cpp_type: int) -> st.SearchStrategy[int]:
    """Integers of a field's range, often at its edges."""
    low, high = INT_EDGES[cpp_type]
    edges = [
        v for v in (0, 1, -1, 2, 3, 7, 100, 65537, low, high, low + 1, high - 1) if low <= v <= high
    ]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def strings(known: Sequence[str]) -> st.SearchStrategy[str]:
    """Known ids (so requests reach deep into the server), odd strings and random text."""
    text = st.text(
        st.characters(exclude_categories=("Cs",)), max_size=40
    )  # protobuf needs valid UTF-8
    return st.one_of(st.sampled_from(list(known) or ["x"]), st.sampled_from(ODD_TEXT), text)


def blobs() -> st.SearchStrategy[bytes]:
    """Random bytes, sometimes a whole number of float32s."""
    return st.one_of(
        st.binary(max_size=96), st.integers(0, 64).map(lambda n: b"\x00\x00\x80\x7f" * n)
    )


def scalar(field: FieldDescriptor, known: Sequence[str]) -> st.SearchStrategy[Any]:
    """A value for one non-message field."""
    if field.type == F.TYPE_BYTES:
        return blobs()
    if field.cpp_type == F.CPPTYPE_STRING:
        return strings(known)
    if field.cpp_type in INT_EDGES:
        return integers(field.cpp_type)
    if field.cpp_type == F.CPPTYPE_ENUM:
        return st.integers(-3, 9)  # proto3 enums are open: unknown values travel as they are
    if field.cpp_type in (F.CPPTYPE_DOUBLE, F.CPPTYPE_FLOAT):
        return st.floats(width=64 if field.cpp_type == F.CPPTYPE_DOUBLE else 32)
    return st.booleans()


def field_values(
    field: FieldDescriptor, known: Sequence[str], depth: int
) -> st.SearchStrategy[Any]:
    """A value for a field: a scalar, a message, or a list / dict of them."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return st.dictionaries(scalar(key, known), scalar(value, known), max_size=3)
    if field.message_type is not None:
        one: st.SearchStrategy[Any] = messages(
            GetMessageClass(field.message_type), known, depth + 1
        )
    else:
        one = scalar(field, known)
    if field.is_repeated:
        return st.lists(one, max_size=2 if field.message_type is not None else 6)
    return one


def set_field(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Assign a drawn value to a field, whatever its kind."""
    target = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        target.update(value)
    elif field.is_repeated and field.message_type is not None:
        for item in value:
            target.add().CopyFrom(item)
    elif field.is_repeated:
        target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def messages(
    cls: type[Message], known: Sequence[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Random messages of a class: each field set or not, nested messages up to `MAX_DEPTH` deep."""
    fields = [] if depth >= MAX_DEPTH else list(cls.DESCRIPTOR.fields)
    optional = {f.name: field_values(f, known, depth) for f in fields}

    def build(values: Mapping[str, Any]) -> Message:
        message = cls()
        for f in fields:
            if f.name in values:
                set_field(message, f, values[f.name])
        return message

    return st.fixed_dictionaries({}, optional=optional).map(build)


@st.composite
def mutated(draw: st.DrawFn, valid: Message, known: Sequence[str]) -> Message:
    """A valid request with one to three fields (possibly nested ones) cleared or replaced at random."""
    message = type(valid)()
    message.CopyFrom(valid)
    if not message.DESCRIPTOR.fields:  # ListTasksRequest and the like: nothing to mutate
        return message
    for _ in range(draw(st.integers(1, 3))):
        target = message
        field = draw(st.sampled_from(list(target.DESCRIPTOR.fields)))
        while (
            field.message_type is not None
            and not field.is_repeated
            and draw(st.booleans())
            and not field.message_type.GetOptions().map_entry
            and field.message_type.fields
        ):
            target = getattr(target, field.name)
            field = draw(st.sampled_from(list(target.DESCRIPTOR.fields)))
        target.ClearField(field.name)
        if draw(st.booleans()):
            set_field(target, field, draw(field_values(field, known, MAX_DEPTH - 1)))
    return message


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """Serialized bytes with a few bytes flipped, cut off or spliced in."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "cut", "insert")))
        at = draw(st.integers(0, len(out)))
        if kind == "flip" and at < len(out):
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at:]
        else:
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


def nested_groups(depth: int) -> bytes:
    """An unknown field (number 15) of `depth` nested protobuf groups: parsing it recurses `depth` deep."""
    return b"\x7b" * depth + b"\x7c" * depth


@dataclass
class Outcome:
    """What one hostile call got back."""

    code: grpc.StatusCode
    reply: bytes | None = None  # a unary reply's bytes
    detail: str = ""


def invoke(
    channel: grpc.Channel,
    method: Method,
    payloads: Sequence[bytes],
    metadata: Any,
    timeout: float = 20,
) -> Outcome:
    """Send raw payloads to an RPC and collect its status (streams: at most a few replies, then cancel)."""
    try:
        if method.client_streaming:
            reply = channel.stream_unary(method.path)(
                iter(payloads), metadata=metadata, timeout=timeout
            )
            return Outcome(grpc.StatusCode.OK, reply)
        if method.server_streaming:
            replies = channel.unary_stream(method.path)(
                payloads[0], metadata=metadata, timeout=timeout
            )
            return _read_some(replies)
        reply = channel.unary_unary(method.path)(payloads[0], metadata=metadata, timeout=timeout)
        return Outcome(grpc.StatusCode.OK, reply)
    except grpc.RpcError as e:
        return Outcome(e.code(), None, e.details() or "")  # type: ignore[attr-defined]


def _read_some(replies: Any, limit: int = 3) -> Outcome:
    """Read up to `limit` replies of a server stream; the stream answered if it sent one or ended."""
    for count, _ in enumerate(replies, 1):
        if count >= limit:  # a watch of a running job, or a file in many chunks: enough seen
            replies.cancel()
            break
    return Outcome(grpc.StatusCode.OK)

"""Uploads through a real server: each bad input gets its status and names its field; retries are no-ops."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    INPUT_SHAPE,
    NUM_CLASSES,
    PURPOSE,
    TASK_ID,
    RunningServer,
    SeededServer,
    example_batch,
    expect_error,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def tensor(array: np.ndarray, dtype: int = pb.DTYPE_FLOAT32) -> pb.Tensor:
    return pb.Tensor(dtype=dtype, shape=array.shape, data=array.tobytes())


def with_features(
    x: np.ndarray, dtype: int = pb.DTYPE_FLOAT32, labels: list[int] | None = None
) -> pb.ExampleBatch:
    labels = list(range(len(x))) if labels is None else labels
    return pb.ExampleBatch(
        batch_id="bad", task_id=TASK_ID, features=tensor(x, dtype), labels=labels
    )


def nan_at(i: int, value: float) -> pb.ExampleBatch:
    x = np.zeros((3, *INPUT_SHAPE), np.float32)
    x[i, 0, 5] = value
    return with_features(x, labels=[0, 1, 2])


BAD_BATCHES: dict[str, tuple[pb.ExampleBatch, grpc.StatusCode, str]] = {
    "wrong dtype": (
        with_features(np.zeros((2, *INPUT_SHAPE), np.uint8), pb.DTYPE_UINT8),
        INVALID,
        "batch[1].features.dtype: expected float32, got uint8",
    ),
    "wrong shape": (
        with_features(np.zeros((2, 1, 15), np.float32)),
        INVALID,
        "batch[1].features.shape: expected [n, 1, 16], got [2, 1, 15]",
    ),
    "missing channel": (
        with_features(np.zeros((2, 16), np.float32)),
        INVALID,
        "batch[1].features.shape",
    ),
    "NaN": (
        nan_at(1, float("nan")),
        INVALID,
        "batch[1].features.data: example 1 contains NaN or inf",
    ),
    "inf": (
        nan_at(2, float("-inf")),
        INVALID,
        "batch[1].features.data: example 2 contains NaN or inf",
    ),
    "label too big": (
        with_features(np.zeros((3, *INPUT_SHAPE), np.float32), labels=[0, 3, 1]),
        INVALID,
        "batch[1].labels[1]: 3 is outside [0, 3)",
    ),
    "negative label": (
        with_features(np.zeros((2, *INPUT_SHAPE), np.float32), labels=[-1, 0]),
        INVALID,
        "batch[1].labels[0]: -1 is outside [0, 3)",
    ),
    "too few labels": (
        with_features(np.zeros((3, *INPUT_SHAPE), np.float32), labels=[0, 1]),
        INVALID,
        "batch[1].labels: expected 3 labels",
    ),
    "empty batch": (
        with_features(np.zeros((0, *INPUT_SHAPE), np.float32)),
        INVALID,
        "batch[1].features.shape: empty batch",
    ),
    "byte count": (
        pb.ExampleBatch(
            batch_id="bad",
            task_id=TASK_ID,
            labels=[0],
            features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[1, 1, 16], data=b"\0" * 63),
        ),
        INVALID,
        "batch[1].features.data: 63 bytes",
    ),
    "no dtype": (
        pb.ExampleBatch(
            batch_id="bad",
            task_id=TASK_ID,
            labels=[0],
            features=pb.Tensor(shape=[1, 1, 16], data=b"\0" * 64),
        ),
        INVALID,
        "batch[1].features.dtype",
    ),
    "no features": (
        pb.ExampleBatch(batch_id="bad", task_id=TASK_ID, labels=[0]),
        INVALID,
        "batch[1].features: required",
    ),
    "no batch id": (
        pb.ExampleBatch(
            task_id=TASK_ID, labels=[0], features=tensor(np.zeros((1, 1, 16), np.float32))
        ),
        INVALID,
        "batch[1].batch_id: required",
    ),
    "hostile batch id": (
        pb.ExampleBatch(
            batch_id="../../x\n",
            task_id=TASK_ID,
            labels=[0],
            features=tensor(np.zeros((1, 1, 16), np.float32)),
        ),
        INVALID,
        "batch[1].batch_id",
    ),
    "unknown task": (
        example_batch("b9", task_id="no-such-task"),
        grpc.StatusCode.NOT_FOUND,
        "task_id: no task 'no-such-task'",
    ),
    "no task id": (example_batch("b9", task_id=""), INVALID, "batch[1].task_id: required"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batches_are_refused_naming_the_field_and_earlier_batches_stay(
    seeded_server: SeededServer, case: str
) -> None:
    bad, code, message = BAD_BATCHES[case]
    device, app = seeded_server.device, seeded_server.server.handle.app
    stream = iter([example_batch("good"), bad])
    details = expect_error(code, device.stub.UploadExamples, stream, metadata=device.md)
    assert details.startswith(message)
    assert app.store.count_examples(TASK_ID) == 8  # the good batch before it was committed
    retry = device.stub.UploadExamples(iter([example_batch("good")]), metadata=device.md)
    assert list(retry.duplicate_batch_ids) == ["good"]


def test_an_empty_stream_is_refused(seeded_server: SeededServer) -> None:
    device = seeded_server.device
    details = expect_error(INVALID, device.stub.UploadExamples, iter([]), metadata=device.md)
    assert details.startswith("batch: ")


def test_a_retried_batch_is_stored_once(seeded_server: SeededServer) -> None:
    device, app = seeded_server.device, seeded_server.server.handle.app
    first = device.stub.UploadExamples(
        iter([example_batch("b1"), example_batch("b2", n=5, seed=2)]), metadata=device.md
    )
    assert list(first.stored_batch_ids) == ["b1", "b2"] and first.examples_stored == 13
    again = device.stub.UploadExamples(
        iter([example_batch("b2", n=5, seed=2), example_batch("b3"), example_batch("b3")]),
        metadata=device.md,
    )
    assert list(again.stored_batch_ids) == ["b3"] and list(again.duplicate_batch_ids) == [
        "b2",
        "b3",
    ]
    assert again.examples_stored == 8 and app.store.count_examples(TASK_ID) == 21


def test_a_batch_id_reused_with_other_content_is_a_conflict(seeded_server: SeededServer) -> None:
    device = seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1", seed=1)]), metadata=device.md)
    details = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        device.stub.UploadExamples,
        iter([example_batch("b1", seed=2)]),
        metadata=device.md,
    )
    assert details.startswith("batch_id")


def test_batch_ids_are_per_device(seeded_server: SeededServer) -> None:
    s = seeded_server.server
    other = s.register(user_id="alice", name="tablet")
    for device in (seeded_server.device, other):
        reply = device.stub.UploadExamples(iter([example_batch("b1")]), metadata=device.md)
        assert list(reply.stored_batch_ids) == ["b1"]


def test_oversized_messages_and_batches_are_refused(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(
        max_message_bytes=64 * 1024, download_chunk_bytes=16 * 1024, max_batch_examples=100
    )
    s.create_task()
    device = s.register()
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        device.stub.UploadExamples,
        iter([example_batch("huge", n=2000)]),
        metadata=device.md,
    )  # 128 KiB of features
    assert "larger than max" in details
    details = expect_error(
        INVALID,
        device.stub.UploadExamples,
        iter([example_batch("many", n=101)]),
        metadata=device.md,
    )
    assert details.startswith("batch[0].features.shape: 101 examples exceed the limit of 100")
    ok = device.stub.UploadExamples(iter([example_batch("fits", n=100)]), metadata=device.md)
    assert ok.examples_stored == 100


def test_uint8_tasks_accept_uint8_images(running_server: RunningServer) -> None:
    s = running_server
    s.create_task("images", input_shape=(1, 8, 8), num_classes=10, dtype=pb.DTYPE_UINT8)
    device = s.register()
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    x = np.arange(4 * 64, dtype=np.uint8).reshape(4, 1, 8, 8)
    batch = pb.ExampleBatch(
        batch_id="img", task_id="images", features=tensor(x, pb.DTYPE_UINT8), labels=[9, 0, 1, 2]
    )
    assert device.stub.UploadExamples(iter([batch]), metadata=device.md).examples_stored == 4


def test_multi_channel_signal_tasks_take_channels_first_examples(
    running_server: RunningServer,
) -> None:
    s = running_server
    s.create_task("accel", input_shape=(3, 16), num_classes=NUM_CLASSES)
    device = s.register()
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    batch = example_batch("xyz", task_id="accel", shape=(3, 16))
    assert device.stub.UploadExamples(iter([batch]), metadata=device.md).examples_stored == 8
    wrong = example_batch("zyx", task_id="accel", shape=(16, 3))  # channels last
    details = expect_error(INVALID, device.stub.UploadExamples, iter([wrong]), metadata=device.md)
    assert "[n, 3, 16]" in details
    too_many = expect_error(
        INVALID,
        s.operator.CreateTask,
        pb.CreateTaskRequest(
            task=pb.Task(
                task_id="wide",
                app_ids=["app"],
                purpose=PURPOSE,
                input_shape=[100, 16],
                input_dtype=pb.DTYPE_FLOAT32,
                num_classes=2,
            )
        ),
        metadata=s.op_md,
    )
    assert too_many.startswith("task.input_shape") and "channels first, at most 64" in too_many

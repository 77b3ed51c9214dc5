"""Streams cannot take the server down: stalled peers are capped and cancelled; tiny chunks are refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.models import MIN_CHUNK_BYTES
from tests.fixtures.server_fixtures import (
    PURPOSE,
    TASK_ID,
    RunningServer,
    example_batch,
    expect_error,
)


def stalled(release: threading.Event) -> Iterator[pb.ExampleBatch]:
    """An upload stream that sends one batch and then nothing until released (a slow or hostile peer)."""
    yield example_batch("first")
    release.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_stalled_uploads_cannot_take_every_thread_and_are_cancelled(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(
        rpc_threads=8,
        max_watch_streams=2,
        max_streams=3,
        max_streams_per_device=3,
        stream_idle_timeout_s=1.5,
    )
    guard = s.handle.streams
    assert guard is not None and guard.slots.limit == 3
    s.create_task()
    device = s.register()
    device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
    )
    release = threading.Event()
    try:
        calls = [
            device.stub.UploadExamples.future(stalled(release), metadata=device.md, timeout=60)
            for _ in range(8)
        ]
        wait_for(
            lambda: sum(c.done() for c in calls) >= 5
        )  # 3 streams hold the slots, 5 were refused
        refused = [c for c in calls if c.done()]
        assert all(c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused)
        assert "retry later" in refused[0].details()
        health = health_pb2_grpc.HealthStub(s.channel)  # other calls still get threads
        assert (
            health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert s.operator.ListTasks(pb.ListTasksRequest(), metadata=s.op_md, timeout=2).tasks
        wait_for(
            lambda: all(c.done() for c in calls), timeout=20
        )  # the watchdog cancels the stalled ones
        assert guard.watchdog.cancelled == 3 and guard.slots.used == 0
    finally:
        release.set()
    reply = device.stub.UploadExamples(
        iter([example_batch("later")]), metadata=device.md, timeout=10
    )
    assert list(reply.stored_batch_ids) == ["later"]
    assert (
        s.handle.app.store.count_examples(TASK_ID) == 16
    )  # the stalled streams' first batches were kept


def test_one_device_gets_only_its_share_of_the_stream_slots(
    server_factory: Callable[..., RunningServer],
) -> None:
    """24 stalled uploads from one device (the default slots) leave every other device its slots."""
    s = server_factory()
    guard = s.handle.streams
    assert guard is not None and (guard.slots.limit, guard.slots.per_device) == (24, 6)
    s.create_task()
    hog, other = s.register(user_id="hog"), s.register(user_id="other")
    for device in (hog, other):
        device.stub.GrantConsent(
            pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
        )
    release = threading.Event()
    try:
        calls = [
            hog.stub.UploadExamples.future(stalled(release), metadata=hog.md, timeout=60)
            for _ in range(24)
        ]
        wait_for(lambda: sum(c.done() for c in calls) >= 18)  # 6 hold the device's share
        refused = [c for c in calls if c.done()]
        assert all(c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused)
        assert "this device already has 6 streams" in refused[0].details()
        # another device still gets slots while the hog's streams stall
        others = [
            other.stub.UploadExamples.future(stalled(release), metadata=other.md, timeout=60)
            for _ in range(3)
        ]
        time.sleep(0.5)
        assert not any(c.done() for c in others) and guard.slots.used == 9
    finally:
        release.set()


def test_a_slow_but_moving_upload_is_not_cancelled(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(stream_idle_timeout_s=1.0)
    s.create_task()
    device = s.register()
    device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
    )

    def slow() -> Iterator[pb.ExampleBatch]:
        for i in range(4):
            time.sleep(0.4)  # 1.6 s in all, but never 1 s without a message
            yield example_batch(f"slow{i}", seed=i)

    reply = device.stub.UploadExamples(slow(), metadata=device.md, timeout=30)
    assert len(reply.stored_batch_ids) == 4 and s.handle.streams.watchdog.cancelled == 0  # type: ignore


def test_tiny_download_chunks_are_raised_to_the_floor(
    running_server: RunningServer, tmp_path: Path
) -> None:
    s = running_server
    s.create_task()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(bytes(100_000))
    info = s.handle.app.models.import_bundle(TASK_ID, "", bundle)
    device = s.register()
    request = pb.DownloadModelRequest(model_id=info.model_id, path="model.onnx", chunk_bytes=1)
    chunks = list(device.stub.DownloadModel(request, metadata=device.md, timeout=30))
    assert [len(c.data) for c in chunks[:-1]] == [MIN_CHUNK_BYTES] * (len(chunks) - 1)
    assert b"".join(c.data for c in chunks) == bytes(100_000)
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        device.stub.DownloadModel,
        pb.DownloadModelRequest(model_id=info.model_id, path="model.onnx", chunk_bytes=-1),
        metadata=device.md,
    )


def test_a_download_nobody_reads_is_cancelled(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    s = server_factory(stream_idle_timeout_s=1.0)
    s.create_task()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(bytes(32 * 2**20))  # far more than the transport buffers
    info = s.handle.app.models.import_bundle(TASK_ID, "", bundle)
    device = s.register()
    request = pb.DownloadModelRequest(model_id=info.model_id, path="model.onnx")
    stream = device.stub.DownloadModel(request, metadata=device.md, timeout=60)
    next(stream)  # then read nothing more: the server's sends block on flow control
    guard = s.handle.streams
    assert guard is not None
    wait_for(lambda: guard.watchdog.cancelled == 1 and guard.slots.used == 0, timeout=20)
    assert expect_error(grpc.StatusCode.CANCELLED, lambda: list(stream)) is not None


def _stalled_reflection(
    release: threading.Event,
) -> Iterator[reflection_pb2.ServerReflectionRequest]:
    """A reflection stream that asks one question and then nothing until released."""
    yield reflection_pb2.ServerReflectionRequest(list_services="")
    release.wait()


@pytest.mark.parametrize("library", ["reflection", "health watch"])
def test_library_streams_cannot_freeze_the_server_either(
    server_factory: Callable[..., RunningServer], library: str
) -> None:
    """More stalled library streams (reflection, Health.Watch) than there are RPC threads: the
    server keeps answering health checks and registrations, the extra streams are refused and the
    stalled ones are cancelled by the watchdog."""
    s = server_factory(
        rpc_threads=8,
        max_watch_streams=2,
        max_streams=3,
        stream_idle_timeout_s=1.5,
        reflection=True,
    )
    release = threading.Event()
    try:
        if library == "reflection":
            stub = reflection_pb2_grpc.ServerReflectionStub(s.channel)
            calls = [stub.ServerReflectionInfo(_stalled_reflection(release)) for _ in range(12)]
        else:
            health = health_pb2_grpc.HealthStub(s.channel)
            calls = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(12)]
        codes: list[grpc.StatusCode] = []

        def drain(call: Any) -> None:
            try:
                for _ in call:
                    pass
            except grpc.RpcError as e:
                codes.append(e.code())

        threads = [threading.Thread(target=drain, args=(c,), daemon=True) for c in calls]
        for t in threads:
            t.start()
        wait_for(lambda: codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 9)
        health = health_pb2_grpc.HealthStub(s.channel)
        for _ in range(3):
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert s.register(user_id="later-user").token
        wait_for(lambda: len(codes) == 12, timeout=20)  # the 3 admitted ones are cancelled
        assert codes.count(grpc.StatusCode.CANCELLED) == 3
        assert s.handle.streams is not None and s.handle.streams.slots.used == 0
    finally:
        release.set()


def test_reflection_is_off_unless_asked_for(running_server: RunningServer) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(running_server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as error:
        list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED

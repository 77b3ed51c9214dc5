"""Hostile input through a real server on 127.0.0.1:0: random, mutated, corrupted, oversized and deeply
nested requests to every RPC, with every kind of token.

The server must always answer with a deliberate status code (never INTERNAL / UNKNOWN, never a hang),
stored example counts may change only through accepted uploads and revocations, and what is stored must
stay whole and consented.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    APP_ID,
    PURPOSE,
    TASK_ID,
    Device,
    RunningServer,
    SeededServer,
    bearer,
    example_batch,
    start_server,
)
from tests.server import hostile, stored
from tests.server.hostile import Method, Outcome

LIMIT = 256 * 1024  # the hostile server's max message size
# RevokeDevice is left out: a random request to it from the fuzzing device revokes that device's own
# token, which would turn every later call into UNAUTHENTICATED (test_revoke_device.py covers it)
METHODS = [m for m in hostile.api_methods() if m.name != "RevokeDevice"]
BY_NAME = {m.name: m for m in METHODS}
OTHER_APP, OTHER_TASK = "app.other", "other-task"
#: The deliberate answers; INTERNAL, UNKNOWN, DEADLINE_EXCEEDED or UNAVAILABLE would mean a bug or a hang.
ANSWERS = {
    getattr(grpc.StatusCode, name)
    for name in (
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
    )
}
# How often each kind of payload is drawn (oversized ones are few: each costs gRPC ~0.1 s to refuse, and
# `test_oversized_and_deeply_nested_requests_are_refused` covers every RPC).
KINDS = (
    ("random",) * 8
    + ("mutated",) * 10
    + ("valid",) * 3
    + ("corrupted",) * 4
    + ("bytes",) * 2
    + ("nested",) * 2
    + ("oversized",)
)


@dataclass
class Hostile:
    """The server under attack, what an attacker could know about it, and a tally of messages sent."""

    server: RunningServer
    devices: list[Device]
    known: list[str]
    valid: dict[str, list[Message]]
    metadata: list[Any]
    sent: int = 0
    codes: dict[str, int] = field(default_factory=dict)


def valid_requests(s: RunningServer, job_id: str, model_id: str) -> dict[str, list[Message]]:
    """At least one valid request of every input type, pointing at things that exist."""
    task = pb.Task(
        task_id="t-new",
        app_ids=[APP_ID],
        purpose=PURPOSE,
        input_shape=[4],
        input_dtype=pb.DTYPE_INT8,
        num_classes=2,
    )
    requests: list[Message] = [
        pb.RegisterDeviceRequest(app_id=APP_ID, user_id="mallory", device_name="x"),
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"),
        pb.RevokeConsentRequest(purpose=PURPOSE),
        pb.ListConsentsRequest(),
        pb.GetTaskRequest(task_id=TASK_ID),
        example_batch("fuzz", n=3),
        pb.ListModelsRequest(task_id=TASK_ID),
        pb.GetModelManifestRequest(model_id=model_id),
        pb.GetModelManifestRequest(task_id=TASK_ID),
        pb.DownloadModelRequest(model_id=model_id, path="manifest.json"),
        pb.CreateTaskRequest(task=task),
        pb.ListTasksRequest(),
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=2)),
        pb.GetJobRequest(job_id=job_id),
        pb.ListJobsRequest(task_id=TASK_ID),
        pb.CancelJobRequest(job_id=job_id),
        pb.WatchJobRequest(job_id=job_id),
        pb.ExportModelsRequest(job_ids=[job_id], formats=["onnx"]),
    ]
    by_type: dict[str, list[Message]] = {}
    for request in requests:
        by_type.setdefault(request.DESCRIPTOR.full_name, []).append(request)
    return by_type


def consenting_device(s: RunningServer, app_id: str, user_id: str) -> Device:
    device = s.register(app_id, user_id)
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    return device


def build_hostile(data_dir: Path) -> Hostile:
    """A server with two apps' tasks, consenting devices, examples, a finished job and an exported model."""
    # no lockout: a third of the calls carry a bad token on purpose, and every call must reach the
    # server's logic (the lockout has its own tests in test_throttle.py)
    s = start_server(
        data_dir,
        max_message_bytes=LIMIT,
        download_chunk_bytes=LIMIT // 4,
        auth_failures_per_minute=0,
        registrations_per_minute=0,
    )
    s.create_task()
    s.create_task(OTHER_TASK, app_ids=(OTHER_APP,))
    alice, bob = consenting_device(s, APP_ID, "alice"), consenting_device(s, OTHER_APP, "bob")
    alice.stub.UploadExamples(iter([example_batch("a0", n=12)]), metadata=alice.md)
    bob.stub.UploadExamples(iter([example_batch("b0", n=5, task_id=OTHER_TASK)]), metadata=bob.md)
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=2)), metadata=s.op_md
    )
    list(s.operator.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=s.op_md, timeout=60))
    export = s.operator.ExportModels(
        pb.ExportModelsRequest(job_ids=[job.job_id]), metadata=s.op_md, timeout=120
    )
    model_id = export.results[0].model.model_id
    known = [
        TASK_ID,
        OTHER_TASK,
        APP_ID,
        OTHER_APP,
        PURPOSE,
        "v1",
        "alice",
        "bob",
        job.job_id,
        model_id,
        alice.device_id,
        "manifest.json",
        "model.onnx",
        "head.npz",
        "onnx",
        "tflite-int8",
        "reinforce",
    ]
    metadata = [
        None,
        s.op_md,
        s.op_md,
        alice.md,
        alice.md,
        bob.md,
        bearer("not-a-token"),
        bearer(f"{alice.device_id}.{'A' * 43}"),
        (("authorization", "Basic abc"),),
        bearer("x" * 600),
    ]
    return Hostile(s, [alice, bob], known, valid_requests(s, job.job_id, model_id), metadata)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One hostile-input server for the module (hypothesis runs many examples against it)."""
    target = build_hostile(tmp_path_factory.mktemp("hostile") / "data")
    yield target
    target.server.stop()


# -- drawing calls ----------------------------------------------------------------------------------------

_MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[Message]] = {}


def random_message(cls: type[Message], known: list[str]) -> st.SearchStrategy[Message]:
    name = cls.DESCRIPTOR.full_name
    if name not in _MESSAGE_STRATEGIES:
        _MESSAGE_STRATEGIES[name] = hostile.messages(cls, known)
    return _MESSAGE_STRATEGIES[name]


@st.composite
def payload(draw: st.DrawFn, method: Method, kind: str, h: Hostile) -> bytes:
    """One request's bytes of the given kind."""
    valid = draw(st.sampled_from(h.valid[method.input_class.DESCRIPTOR.full_name]))
    if kind == "valid":
        return valid.SerializeToString()
    if kind == "random":
        return draw(random_message(method.input_class, h.known)).SerializeToString()
    if kind == "mutated":
        return draw(hostile.mutated(valid, h.known)).SerializeToString()
    if kind == "corrupted":
        return draw(hostile.corrupted(valid.SerializeToString()))
    if kind == "nested":
        return hostile.nested_groups(draw(st.integers(101, 5000)))
    if kind == "oversized":
        return b"\x00" * draw(st.integers(LIMIT + 1, LIMIT + 4096))
    return draw(st.binary(max_size=128))


@dataclass
class Call:
    """One hostile call: which RPC, what kind of payload, the payloads and the metadata."""

    method: Method
    kind: str
    payloads: list[bytes]
    metadata: Any

    def __repr__(self) -> str:
        shown = [p if len(p) <= 200 else p[:100] + b"...(%d bytes)" % len(p) for p in self.payloads]
        return f"Call({self.method.name}, {self.kind}, {shown!r}, {self.metadata!r:.120})"


@st.composite
def calls(draw: st.DrawFn, h: Hostile) -> Call:
    method = draw(st.sampled_from(METHODS))
    kind = draw(st.sampled_from(KINDS))
    count = draw(st.integers(0, 3)) if method.client_streaming else 1  # 0: an empty upload stream
    payloads = [draw(payload(method, kind, h)) for _ in range(count)]
    # Mostly the token the RPC wants, so requests get past auth and into the server's logic.
    rightful = (
        h.devices[0].md if method.path.startswith("/autohas.v1.DeviceService") else h.server.op_md
    )
    metadata = rightful if draw(st.integers(0, 9)) < 7 else draw(st.sampled_from(h.metadata))
    return Call(method, kind, payloads, metadata)


# -- checking -------------------------------------------------------------------------------------------


def total_examples(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(SUM(count), 0) FROM examples").fetchone()[0])


def labels_sent(payloads: list[bytes]) -> int:
    """An upper bound on the examples an upload stream could store: labels of the batches that parse."""
    total = 0
    for data in payloads:
        with contextlib.suppress(Exception):
            total += len(pb.ExampleBatch.FromString(data).labels)
    return total


def check_counts(call: Call, outcome: Outcome, delta: int) -> None:
    """Stored examples change only through accepted uploads (and revocations), by what they report."""
    name = call.method.name
    if name == "UploadExamples" and outcome.code == grpc.StatusCode.OK:
        assert delta == pb.UploadSummary.FromString(outcome.reply).examples_stored
    elif name == "UploadExamples":  # a stream that failed at batch k keeps batches 0..k-1
        assert 0 <= delta <= labels_sent(call.payloads)
    elif name == "RevokeConsent" and outcome.code == grpc.StatusCode.OK:
        assert delta == -pb.RevokeConsentResponse.FromString(outcome.reply).examples_deleted
    else:
        assert delta == 0, f"{name} changed the stored examples by {delta}"


def check_code(call: Call, outcome: Outcome) -> None:
    """A deliberate answer; the right one for oversized and too deeply nested requests."""
    assert outcome.code in ANSWERS, (
        f"{call.method.name} ({call.kind}): {outcome.code} {outcome.detail}"
    )
    denied = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    if (
        call.kind == "oversized" and call.payloads and outcome.code not in denied
    ):  # streams check auth first
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome.detail
    if call.kind == "nested" and call.payloads and outcome.code not in denied:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.detail
        assert "not a valid autohas.v1." in outcome.detail


def attack(h: Hostile, call: Call, conn: sqlite3.Connection) -> None:
    before = total_examples(conn)
    started = time.monotonic()
    outcome = hostile.invoke(h.server.channel, call.method, call.payloads, call.metadata)
    h.sent += max(1, len(call.payloads))
    h.codes[outcome.code.name] = h.codes.get(outcome.code.name, 0) + 1
    assert time.monotonic() - started < 15, (
        f"{call.method.name} took {time.monotonic() - started:.1f} s"
    )
    check_code(call, outcome)
    check_counts(call, outcome, total_examples(conn) - before)


def run_attack(h: Hostile, examples: int) -> None:
    """Send `examples` hostile calls (hypothesis draws them; `deadline=None`: the machine is shared)."""
    with closing(stored.connect(h.server.data_dir)) as conn:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(call=calls(h))
        def one(call: Call) -> None:
            attack(h, call, conn)

        one()


def check_still_sound(h: Hostile) -> None:
    """After the attack: the server answers, and every stored batch is whole and consented."""
    health = health_pb2_grpc.HealthStub(h.server.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert stored.integrity(h.server.data_dir) == "ok"
    tasks = {t.task_id: t for t in h.server.handle.app.store.list_tasks()}
    for row in stored.stored_rows(h.server.data_dir):
        assert stored.malformed(row, tasks[row.task_id].num_classes) == "", row.batch_id
    with closing(stored.connect(h.server.data_dir)) as conn:
        unconsented = conn.execute(
            "SELECT COUNT(*) FROM examples e JOIN tasks t ON t.task_id = e.task_id WHERE NOT EXISTS ("
            "SELECT 1 FROM consents c WHERE c.app_id = e.app_id AND c.user_id = e.user_id "
            "AND c.purpose = t.purpose AND c.revoked_at IS NULL)"
        ).fetchone()[0]
    assert unconsented == 0


@pytest.mark.slow  # 25 s: over the default run's ~20 s a test (make test stays under 10 minutes)
def test_two_thousand_hostile_messages_get_answers_and_change_nothing_unaccepted(
    attacked: Hostile,
) -> None:
    run_attack(attacked, examples=2000)
    assert attacked.sent >= 2000, attacked.sent
    assert attacked.codes.get("OK", 0) > 50 and attacked.codes.get("INVALID_ARGUMENT", 0) > 50, (
        attacked.codes
    )
    check_still_sound(attacked)


@pytest.mark.slow
def test_ten_thousand_more_hostile_messages(attacked: Hostile) -> None:
    run_attack(attacked, examples=10_000)
    check_still_sound(attacked)


# -- the limits, one by one ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_oversized_and_deeply_nested_requests_are_refused(
    attacked: Hostile, method: Method
) -> None:
    md = (
        attacked.devices[0].md
        if method.path.startswith("/autohas.v1.DeviceService")
        else attacked.server.op_md
    )
    channel = attacked.server.channel
    big = hostile.invoke(channel, method, [b"\x00" * (LIMIT + 1)], md)
    assert big.code == grpc.StatusCode.RESOURCE_EXHAUSTED, big.detail
    deep = hostile.invoke(channel, method, [hostile.nested_groups(10_000)], md)
    if deep.code != grpc.StatusCode.PERMISSION_DENIED:  # the operator's token on a device-only RPC
        assert deep.code == grpc.StatusCode.INVALID_ARGUMENT
        field = "batch[0].message" if method.client_streaming else "request"
        assert deep.detail.startswith(
            f"{field}: not a valid {method.input_class.DESCRIPTOR.full_name}"
        )
    shallow = hostile.invoke(
        channel, method, [hostile.nested_groups(50)], md
    )  # an unknown field: ignored
    assert shallow.code in ANSWERS and "not a valid" not in shallow.detail


def test_garbage_mid_stream_keeps_the_batches_before_it(seeded_server: SeededServer) -> None:
    s, device = seeded_server.server, seeded_server.device
    good = example_batch("before-garbage", n=4).SerializeToString()
    outcome = hostile.invoke(s.channel, BY_NAME["UploadExamples"], [good, b"\xff\xff"], device.md)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.detail.startswith(
        "batch[1].message: not a valid autohas.v1.ExampleBatch message"
    )
    assert s.handle.app.store.count_examples(TASK_ID) == 4

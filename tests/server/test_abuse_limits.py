"""Limits on what a peer can cost the server: storage quotas, registration and failed-auth rate limits,
weak operator tokens, exposure without TLS, absurd tensor shapes (each through a real server)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.config import ServerConfig
from tests.fixtures.server_fixtures import (
    PURPOSE,
    ROOT,
    Device,
    RunningServer,
    autohas_command,
    bearer,
    example_batch,
    expect_error,
)

BATCH_BYTES = 8 * 16 * 4 + 8 * 8  # example_batch(n=8): float32 [8, 1, 16] features, int64 labels


def consenting(s: RunningServer, user: str, app: str = "com.example.app") -> Device:
    device = s.register(app, user)
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    return device


def upload(device: Device, batch_id: str) -> pb.UploadSummary:
    return device.stub.UploadExamples(iter([example_batch(batch_id)]), metadata=device.md)


def test_device_and_user_quotas_refuse_the_batch_that_would_exceed_them(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(device_quota_bytes=3 * BATCH_BYTES, user_quota_bytes=4 * BATCH_BYTES)
    s.create_task()
    phone, tablet, other = consenting(s, "alice"), consenting(s, "alice"), consenting(s, "bob")
    for i in range(3):
        upload(phone, f"b{i}")
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, upload, phone, "b3"
    )  # the device's quota
    assert details.startswith("quota:") and "the device" in details
    assert s.handle.app.store.count_examples("gestures", user_id="alice") == 24  # nothing stored
    upload(tablet, "t0")  # the user's 4th batch: within her quota
    details = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, upload, tablet, "t1")
    assert "the user" in details
    assert upload(other, "b0").examples_stored == 8  # another user is not affected
    assert upload(phone, "b0").duplicate_batch_ids == ["b0"]  # a retry is still answered


def test_the_app_quota_holds_across_users(server_factory: Callable[..., RunningServer]) -> None:
    s = server_factory(app_quota_bytes=2 * BATCH_BYTES)
    s.create_task()
    upload(consenting(s, "u1"), "a")
    upload(consenting(s, "u2"), "a")
    details = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, upload, consenting(s, "u3"), "a")
    assert "the app" in details


def test_registrations_are_rate_limited_per_address(
    server_factory: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    s = server_factory(registrations_per_minute=5)
    for i in range(5):
        s.register(user_id=f"u{i}")
    with caplog.at_level(logging.WARNING):
        details = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, s.register, user_id="u5")
        expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, s.register, user_id="u6")
    assert details.startswith("RegisterDevice: more than 5 calls") and "retry in" in details
    lines = [r.getMessage() for r in caplog.records if "RegisterDevice" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0]  # logged once, not once per refusal


def test_failed_authentications_lock_the_address_out(
    server_factory: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    s = server_factory(auth_failures_per_minute=5, auth_lockout_s=60)
    request = pb.ListTasksRequest()
    for _ in range(4):
        expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            s.operator.ListTasks,
            request,
            metadata=bearer("x" * 40),
        )
    s.operator.ListTasks(request, metadata=s.op_md)  # a success forgets the failures
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            expect_error(
                grpc.StatusCode.UNAUTHENTICATED,
                s.operator.ListTasks,
                request,
                metadata=bearer(secrets.token_urlsafe(32)),
            )
    # locked out: even the right token is refused before it is checked, so guessing stops here
    details = expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, s.operator.ListTasks, request, metadata=s.op_md
    )
    assert "too many failed authentications" in details and "retry in 60 s" in details
    assert any("locked out for 60 s" in r.getMessage() for r in caplog.records)


def test_a_weak_operator_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="operator_token: too predictable"):
        ServerConfig(data_dir=tmp_path, operator_token="a" * 16)
    with pytest.raises(ValueError, match="too predictable"):
        ServerConfig(data_dir=tmp_path, operator_token="abababababababababab")
    ServerConfig(data_dir=tmp_path, operator_token=secrets.token_urlsafe(32))


def _cli(tmp_path: Path, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOHAS_OPERATOR_TOKEN": token, "PYTHONPATH": str(ROOT)}
    command = [*autohas_command(), "server", "--data-dir", str(tmp_path / "d"), "--port", "0"]
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_cli_refuses_a_weak_token_and_an_exposed_plaintext_server(tmp_path: Path) -> None:
    weak = _cli(tmp_path, "a" * 16)
    assert weak.returncode == 2 and "operator_token: too predictable" in weak.stderr
    exposed = _cli(tmp_path, secrets.token_urlsafe(32), "--host", "0.0.0.0")
    assert exposed.returncode == 2
    assert exposed.stderr.strip().splitlines() == [
        "autohas server: host: 0.0.0.0 is reachable from other machines, so it needs TLS "
        "(--tls-cert/--tls-key) and enrollment keys (--enrollment-keys); pass --insecure to serve "
        "without them anyway"
    ]


def test_a_non_loopback_host_needs_tls_and_enrollment_keys_unless_insecure(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    for host in ("0.0.0.0", "::", "192.168.1.7", "server.example.com"):
        with pytest.raises(ValueError, match="--insecure"):
            ServerConfig(data_dir=tmp_path, operator_token=token, host=host)
        ServerConfig(data_dir=tmp_path, operator_token=token, host=host, insecure=True)
    with pytest.raises(ValueError, match="enrollment keys"):  # TLS alone is not enough
        ServerConfig(
            data_dir=tmp_path,
            operator_token=token,
            host="0.0.0.0",
            tls_cert=tmp_path / "c.pem",
            tls_key=tmp_path / "k.pem",
        )
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.5"):
        ServerConfig(data_dir=tmp_path, operator_token=token, host=host)


@pytest.mark.parametrize("shape", [[0, 2**62], [2**62, 0], [0, 2**40, 2**40]])
def test_an_absurd_shape_is_invalid_argument(
    server_factory: Callable[..., RunningServer], shape: list[int]
) -> None:
    s = server_factory()
    s.create_task()
    device = consenting(s, "alice")
    batch = pb.ExampleBatch(
        batch_id="b",
        task_id="gestures",
        features=pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=shape, data=b""),
    )
    details = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        device.stub.UploadExamples,
        iter([batch]),
        metadata=device.md,
    )
    assert details.startswith("batch[0].features.shape") and "too large" in details

"""Enrollment tickets: with keys configured, only a device holding its app backend's ticket registers."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from autohas_edge.device_sdk import ServerClient
from autohas_edge.device_sdk.errors import AuthenticationError
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.app import make_server
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.enrollment import TicketError, check_ticket, load_keys, mint_ticket
from tests.fixtures.server_fixtures import APP_ID, PURPOSE, RunningServer, bearer, expect_error

SECRET = "s" * 16 + secrets.token_urlsafe(24)
OTHER_APP = "com.example.other"


def _keys_file(tmp_path: Path, keys: dict[str, str], mode: int = 0o600) -> Path:
    path = tmp_path / "enrollment.json"
    path.write_text(json.dumps(keys))
    os.chmod(path, mode)
    return path


def test_a_ticket_proves_exactly_its_app_user_and_lifetime() -> None:
    ticket = mint_ticket(SECRET, APP_ID, "alice", ttl_s=60, now=1000.0)
    check_ticket(SECRET, ticket, APP_ID, "alice", now=1059.0)
    with pytest.raises(TicketError, match="expired"):
        check_ticket(SECRET, ticket, APP_ID, "alice", now=1060.0)
    with pytest.raises(TicketError, match="another app or user") as info:
        check_ticket(SECRET, ticket, APP_ID, "bob", now=1001.0)
    assert info.value.wrong_subject
    with pytest.raises(TicketError, match="bad signature"):
        check_ticket("x" * 40, ticket, APP_ID, "alice", now=1001.0)
    version, payload, signature = ticket.split(".")
    forged = mint_ticket("y" * 40, APP_ID, "bob", ttl_s=60, now=1000.0).split(".")[1]
    with pytest.raises(
        TicketError, match="bad signature"
    ):  # someone else's claims under alice's signature
        check_ticket(SECRET, f"{version}.{forged}.{signature}", APP_ID, "bob", now=1001.0)
    for bad in (
        "",
        "v1.abc",
        "v2." + payload + "." + signature,
        "v1.a.b.c",
        "x" * 5000,
        "v1.abc.\u00e9",
        f"v1.{payload}.{signature}\u00e9",
    ):
        with pytest.raises(TicketError):
            check_ticket(SECRET, bad, APP_ID, "alice", now=1001.0)
    with pytest.raises(ValueError, match="at least 32"):
        mint_ticket("short", APP_ID, "alice")
    with pytest.raises(ValueError, match="ttl_s"):
        mint_ticket(SECRET, APP_ID, "alice", ttl_s=86_400)


def _signed(claims: dict[str, object]) -> str:
    """A ticket a backend signed itself (not via mint_ticket), with any claims."""
    import base64
    import hashlib
    import hmac

    payload = base64.urlsafe_b64encode(json.dumps(claims).encode())
    payload_text = payload.rstrip(b"=").decode()
    signature = hmac.new(SECRET.encode(), f"v1.{payload_text}".encode(), hashlib.sha256).digest()
    return f"v1.{payload_text}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_a_ticket_valid_for_too_long_is_refused() -> None:
    """A backend that signs its own long-lived claims (not via mint_ticket) still gets them refused."""
    ticket = _signed({"app": APP_ID, "user": "alice", "exp": 10**10})
    with pytest.raises(TicketError, match="more than 3600"):
        check_ticket(SECRET, ticket, APP_ID, "alice")


@pytest.mark.parametrize("exp", [float("nan"), "nan", "1e12", True, 1e9 + 0.5, None])
def test_a_ticket_whose_expiry_is_not_an_integer_is_refused(exp: object) -> None:
    """NaN compares false with everything, so such a ticket would never expire."""
    with pytest.raises(TicketError, match=r"exp must be an integer|malformed"):
        check_ticket(SECRET, _signed({"app": APP_ID, "user": "alice", "exp": exp}), APP_ID, "alice")


def test_keys_must_be_private_well_formed_and_long(tmp_path: Path) -> None:
    assert load_keys(_keys_file(tmp_path, {APP_ID: SECRET})) == {APP_ID: SECRET}
    with pytest.raises(ValueError, match="chmod 600"):
        load_keys(_keys_file(tmp_path, {APP_ID: SECRET}, mode=0o644))
    with pytest.raises(ValueError, match="shorter than 32"):
        load_keys(_keys_file(tmp_path, {APP_ID: "short"}))
    with pytest.raises(ValueError, match="app_id -> secret"):
        load_keys(_keys_file(tmp_path, {APP_ID: 5}))  # type: ignore[dict-item]


def test_a_server_with_keys_registers_only_ticket_holders(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    s = server_factory(enrollment_keys=_keys_file(tmp_path, {APP_ID: SECRET}))

    def register(user: str, ticket: str = "", app: str = APP_ID) -> pb.RegisterDeviceResponse:
        return s.device.RegisterDevice(
            pb.RegisterDeviceRequest(
                app_id=app, user_id=user, device_name="p", enrollment_ticket=ticket
            )
        )

    assert "requires one" in expect_error(grpc.StatusCode.UNAUTHENTICATED, register, "alice")
    assert "bad signature" in expect_error(
        grpc.StatusCode.UNAUTHENTICATED, register, "alice", mint_ticket("z" * 40, APP_ID, "alice")
    )
    assert "expired" in expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        register,
        "alice",
        mint_ticket(SECRET, APP_ID, "alice", ttl_s=1, now=0),
    )
    bobs = mint_ticket(SECRET, APP_ID, "bob")
    assert "another app or user" in expect_error(
        grpc.StatusCode.PERMISSION_DENIED, register, "alice", bobs
    )
    assert "no enrollment key" in expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        register,
        "carol",
        mint_ticket(SECRET, OTHER_APP, "carol"),
        OTHER_APP,
    )
    reply = register("alice", mint_ticket(SECRET, APP_ID, "alice"))
    consent = s.device.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"),
        metadata=bearer(reply.device_token),
    )
    assert consent.user_id == "alice" and consent.active


def test_the_sdk_registers_with_a_ticket(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    s = server_factory(enrollment_keys=_keys_file(tmp_path, {APP_ID: SECRET}))
    with ServerClient(s.address, tmp_path / "state", app_id=APP_ID, user_id="dana") as client:
        with pytest.raises(AuthenticationError, match="enrollment_ticket"):
            client.register()
        assert client.device_id is None  # nothing half-registered is kept
        device_id = client.register(enrollment_ticket=mint_ticket(SECRET, APP_ID, "dana"))
        assert device_id and client.device_id == device_id


def test_a_server_refuses_to_start_with_readable_keys(tmp_path: Path) -> None:
    config = ServerConfig(
        data_dir=tmp_path / "data",
        operator_token=secrets.token_urlsafe(32),
        enrollment_keys=_keys_file(tmp_path, {APP_ID: SECRET}, mode=0o644),
    )
    with pytest.raises(ValueError, match="chmod 600"):
        make_server(config)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_a_ticket_registers_one_device_only(
    tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    s = server_factory(enrollment_keys=_keys_file(tmp_path, {APP_ID: SECRET}))

    def register(ticket: str) -> pb.RegisterDeviceResponse:
        request = pb.RegisterDeviceRequest(app_id=APP_ID, user_id="alice", enrollment_ticket=ticket)
        return s.device.RegisterDevice(request)

    ticket = mint_ticket(SECRET, APP_ID, "alice")
    assert register(ticket).device_token
    details = expect_error(grpc.StatusCode.UNAUTHENTICATED, register, ticket)  # a replay
    assert "already used" in details
    # the same user's second device gets its own ticket, even one minted in the same second
    assert mint_ticket(SECRET, APP_ID, "alice") != mint_ticket(SECRET, APP_ID, "alice")
    assert register(mint_ticket(SECRET, APP_ID, "alice")).device_token
    s.stop()
    restarted = server_factory(
        data_dir=s.data_dir, enrollment_keys=_keys_file(tmp_path, {APP_ID: SECRET})
    )
    request = pb.RegisterDeviceRequest(app_id=APP_ID, user_id="alice", enrollment_ticket=ticket)
    expect_error(grpc.StatusCode.UNAUTHENTICATED, restarted.device.RegisterDevice, request)

"""RevokeDevice: a device revokes its own token, the operator any device's; nobody else's."""

from __future__ import annotations

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import PURPOSE, RunningServer, expect_error


def _consents(s: RunningServer, md: tuple[tuple[str, str]]) -> pb.ListConsentsResponse:
    return s.device.ListConsents(pb.ListConsentsRequest(), metadata=md)


def test_a_device_revokes_its_own_token_and_no_one_elses(running_server: RunningServer) -> None:
    s = running_server
    alice, bob = s.register(user_id="alice"), s.register(user_id="bob")
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    alice.stub.GrantConsent(grant, metadata=alice.md)
    # bob cannot revoke alice's device: answered exactly as an unknown device
    theirs = expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.RevokeDevice,
        pb.RevokeDeviceRequest(device_id=alice.device_id),
        metadata=bob.md,
    )
    unknown = expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.RevokeDevice,
        pb.RevokeDeviceRequest(device_id="dev-0000000000000000"),
        metadata=bob.md,
    )
    assert theirs == unknown
    assert len(_consents(s, alice.md).consents) == 1
    reply = s.device.RevokeDevice(pb.RevokeDeviceRequest(), metadata=alice.md)
    assert reply.device_id == alice.device_id and reply.revoked_at.seconds > 0
    details = expect_error(grpc.StatusCode.UNAUTHENTICATED, _consents, s, alice.md)
    assert "revoked" in details
    # her consent is kept: revoking a token is not revoking consent
    consents = s.handle.app.store.list_consents(alice.app_id, "alice")
    assert [c.active for c in consents] == [True]
    assert _consents(s, bob.md).consents == []  # bob's token still works


def test_the_operator_revokes_any_device(running_server: RunningServer) -> None:
    s = running_server
    device = s.register(user_id="carol")
    request = pb.RevokeDeviceRequest(device_id=device.device_id)
    assert s.device.RevokeDevice(request, metadata=s.op_md).device_id == device.device_id
    expect_error(grpc.StatusCode.UNAUTHENTICATED, _consents, s, device.md)
    again = s.device.RevokeDevice(request, metadata=s.op_md)  # idempotent: the first time stays
    assert again.revoked_at.seconds > 0
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        s.device.RevokeDevice,
        pb.RevokeDeviceRequest(),
        metadata=s.op_md,
    )
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        s.device.RevokeDevice,
        pb.RevokeDeviceRequest(device_id="dev-ffffffffffffffff"),
        metadata=s.op_md,
    )

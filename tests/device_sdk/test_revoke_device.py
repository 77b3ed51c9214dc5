"""The SDK's and the operator client's `revoke_device` against a real server on 127.0.0.1:0."""

from __future__ import annotations

from pathlib import Path

import pytest

from autohas_edge.device_sdk import ServerClient
from autohas_edge.device_sdk.errors import AuthenticationError
from autohas_edge.server.errors import Unauthenticated
from autohas_edge.server.operator_client import OperatorClient
from tests.fixtures.server_fixtures import RunningServer

APP = "com.example.keyboard"


def test_a_device_revokes_its_token_and_registers_again(
    running_server: RunningServer, tmp_path: Path
) -> None:
    with ServerClient(
        running_server.address, tmp_path / "sdk", app_id=APP, user_id="alice", timeout=5
    ) as client:
        first = client.register()
        client.grant_consent()
        token = client.outbox.get("device_token")
        client.revoke_device()
        assert client.device_id == ""  # forgotten here
        with pytest.raises(AuthenticationError):
            client.consents()  # no token now
        stored = running_server.handle.app.store.get_device(first)
        assert stored is not None and stored.revoked_at is not None
        with pytest.raises(Unauthenticated, match="revoked"):  # the server refuses the old token
            running_server.handle.app.accounts.authenticate(token)
        assert client.register() != first
        assert [c.active for c in client.consents()] == [True]  # the user's consent stayed


def test_the_operator_client_revokes_a_device(
    running_server: RunningServer, tmp_path: Path
) -> None:
    device = running_server.register(APP, "bob")
    with OperatorClient(running_server.address, running_server.operator_token) as operator:
        assert operator.revoke_device(device.device_id).device_id == device.device_id
    with pytest.raises(Unauthenticated, match="revoked"):
        running_server.handle.app.accounts.authenticate(device.token)

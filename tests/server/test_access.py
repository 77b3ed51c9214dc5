"""Access through a real server: tokens unguessable, bound to one device, compared in constant time and
stored hashed; files private; a device sees only its app's models and its own user's data; TLS and
mutual TLS with certificates made here (OpenSSL CLI, EC keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server import tokens
from autohas_edge.server.app import make_server
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.store import DB_FILE
from tests.fixtures.server_fixtures import (
    APP_ID,
    PURPOSE,
    TASK_ID,
    Device,
    RunningServer,
    ServerProcess,
    bearer,
    example_batch,
    expect_error,
)
from tests.server import pki, stored

OTHER_APP, OTHER_TASK = "app.other", "other-task"


def consent(device: Device) -> None:
    device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
    )


def test_device_tokens_are_unguessable(running_server: RunningServer) -> None:
    devices = [running_server.register(user_id=f"u{i}") for i in range(64)]
    secrets_ = [base64.urlsafe_b64decode(d.token.split(".", 1)[1] + "=") for d in devices]
    assert all(len(s) == 32 for s in secrets_)  # 256 random bits a token
    assert len(set(secrets_)) == 64 and len({d.device_id for d in devices}) == 64
    bits = np.unpackbits(np.frombuffer(b"".join(secrets_), dtype=np.uint8))
    assert 0.45 < bits.mean() < 0.55  # no stuck bits: 16384 bits of a fair source land here
    for device in devices[:3]:
        assert device.token.startswith(device.device_id + ".")


def test_a_token_works_only_for_its_own_device_and_server(
    server_factory: Callable[..., RunningServer],
) -> None:
    first, second = server_factory(), server_factory()
    for s in (first, second):
        s.create_task()
    alice, bob = first.register(user_id="alice"), first.register(user_id="bob")
    consent(alice)
    secret = alice.token.split(".", 1)[1]
    forged = (
        f"{bob.device_id}.{secret}",
        f"{alice.device_id}.{secret[:-1]}",
        f"{alice.device_id}{secret}",
        secret,
        alice.token + "x",
    )
    for token in forged:
        expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            first.device.ListConsents,
            pb.ListConsentsRequest(),
            metadata=bearer(token),
        )
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        second.device.ListConsents,
        pb.ListConsentsRequest(),
        metadata=alice.md,
    )  # another server (data dir) never issued it
    alice.stub.UploadExamples(iter([example_batch("a1")]), metadata=alice.md)
    rows = stored.stored_rows(first.data_dir)
    assert [(r.device_id, r.user_id) for r in rows] == [
        (alice.device_id, "alice")
    ]  # the token decides who


def test_token_checks_compare_hashes_in_constant_time(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every check compares two SHA-256 digests with `hmac.compare_digest`, and a failing token costs the
    same two comparisons whether its device id exists or not, so timing reveals nothing of the secret."""
    s = running_server
    device = s.register()
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", recording)
    bad = {
        "wrong secret": f"{device.device_id}.{'A' * 43}",
        "unknown device": f"dev-{'0' * 16}.{'A' * 43}",
        "no device part": "A" * 50,
        "long": "x" * 500,
    }
    for name, token in bad.items():
        compared.clear()
        expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            s.device.ListConsents,
            pb.ListConsentsRequest(),
            metadata=bearer(token),
        )
        assert compared == [(64, 64), (64, 64)], (
            name
        )  # operator hash, then a device hash (or a decoy)
    compared.clear()
    s.device.ListConsents(pb.ListConsentsRequest(), metadata=device.md)
    assert compared == [(64, 64), (64, 64)]


def private_files(data_dir: Path) -> Iterator[Path]:
    return (p for p in data_dir.rglob("*") if p.is_file())


def test_tokens_are_stored_hashed_and_data_files_are_private(
    tmp_path: Path, server_process: Callable[..., ServerProcess]
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)  # as a careless operator (or an older release) left it
    token = secrets.token_urlsafe(32)
    server = server_process(data_dir, token, "--engine", "tests.server.fake_engine")
    reply = server.device.RegisterDevice(pb.RegisterDeviceRequest(app_id=APP_ID, user_id="alice"))
    device_token, secret = reply.device_token, reply.device_token.split(".", 1)[1]
    task = pb.Task(
        task_id=TASK_ID,
        app_ids=[APP_ID],
        purpose=PURPOSE,
        input_shape=[1, 16],
        input_dtype=pb.DTYPE_FLOAT32,
        num_classes=3,
    )
    server.operator.CreateTask(pb.CreateTaskRequest(task=task), metadata=server.op_md)
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    server.device.GrantConsent(grant, metadata=bearer(device_token))
    server.device.UploadExamples(iter([example_batch("a1")]), metadata=bearer(device_token))
    job = server.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=2)), metadata=server.op_md
    )
    list(
        server.operator.WatchJob(
            pb.WatchJobRequest(job_id=job.job_id), metadata=server.op_md, timeout=60
        )
    )
    for path in private_files(data_dir):  # database, WAL, job snapshot: no token in clear anywhere
        content = path.read_bytes()
        assert secret.encode() not in content and token.encode() not in content, path
    with closing(stored.connect(data_dir)) as conn:
        (stored_hash,) = conn.execute("SELECT token_hash FROM devices").fetchone()
    assert stored_hash == hashlib.sha256(device_token.encode()).hexdigest()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    job_dir = f"jobs/{job.job_id}"
    private = (
        DB_FILE,
        f"{DB_FILE}-wal",
        f"{DB_FILE}-shm",
        f"{job_dir}/dataset.npz",
        f"{job_dir}/audit.json",
        f"{job_dir}/worker.log",
    )
    for name in private:
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    for name in ("jobs", "models", job_dir, f"{job_dir}/run"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o700, name


def test_a_shared_directory_is_refused_as_data_dir_not_chmodded(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    config = ServerConfig(data_dir=shared, operator_token=secrets.token_urlsafe(32))
    with pytest.raises(ValueError, match=r"shared directory .*mode 1777"):
        make_server(config)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and list(shared.iterdir()) == []


def import_model(s: RunningServer, task_id: str, tmp_path: Path) -> str:
    bundle = tmp_path / f"bundle-{task_id}"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(f'{{"task": "{task_id}"}}')
    return s.handle.app.models.import_bundle(task_id, "", bundle).model_id


def test_a_device_sees_only_its_apps_models_and_its_own_users_data(
    running_server: RunningServer, tmp_path: Path
) -> None:
    s = running_server
    s.create_task()
    s.create_task(OTHER_TASK, app_ids=(OTHER_APP,))
    mine, theirs = import_model(s, TASK_ID, tmp_path), import_model(s, OTHER_TASK, tmp_path)
    alice, bob = s.register(APP_ID, "alice"), s.register(APP_ID, "bob")
    eve = s.register(OTHER_APP, "alice")  # the same user id in another app: another person
    for device in (alice, bob, eve):
        consent(device)
    bob_batch = example_batch("b1", seed=7)
    bob.stub.UploadExamples(iter([bob_batch]), metadata=bob.md)
    alice.stub.UploadExamples(iter([example_batch("a1")]), metadata=alice.md)
    bob.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=bob.md)
    bob.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v2"), metadata=bob.md
    )
    bob.stub.UploadExamples(iter([bob_batch]), metadata=bob.md)
    replies = [
        alice.stub.ListConsents(pb.ListConsentsRequest(), metadata=alice.md),
        alice.stub.ListModels(pb.ListModelsRequest(), metadata=alice.md),
        alice.stub.GetModelManifest(pb.GetModelManifestRequest(task_id=TASK_ID), metadata=alice.md),
        alice.stub.GetTask(pb.GetTaskRequest(task_id=TASK_ID), metadata=alice.md),
    ]
    assert [(c.user_id, c.consent_text_version) for c in replies[0].consents] == [("alice", "v1")]
    assert [m.model_id for m in replies[1].models] == [mine]
    leaked = b"".join(r.SerializeToString() for r in replies)
    assert b"bob" not in leaked and theirs.encode() not in leaked
    assert bob_batch.features.data[:32] not in leaked
    forbidden = (
        (alice.stub.GetModelManifest, pb.GetModelManifestRequest(model_id=theirs)),
        (alice.stub.DownloadModel, pb.DownloadModelRequest(model_id=theirs, path="manifest.json")),
        (alice.stub.ListModels, pb.ListModelsRequest(task_id=OTHER_TASK)),
        (alice.stub.GetTask, pb.GetTaskRequest(task_id=OTHER_TASK)),
    )
    for call, request in forbidden:  # answered as if they did not exist (no existence oracle)
        expect_error(grpc.StatusCode.NOT_FOUND, call, request, metadata=alice.md)
    revoked = eve.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=eve.md)
    assert revoked.examples_deleted == 0  # alice of the other app is not this alice
    for user in ("alice", "bob"):
        assert s.handle.app.store.count_examples(TASK_ID, APP_ID, user) == 8


# -- TLS --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pki.KeyPair]:
    """A CA with a server and a client certificate, and a second CA with its own client certificate."""
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue = pki.make_ca(directory, "ca"), pki.make_ca(directory, "rogue-ca")
    return {
        "ca": ca,
        "rogue-ca": rogue,
        "server": pki.issue(ca, directory, "server", server=True),
        "client": pki.issue(ca, directory, "client", server=False),
        "rogue-client": pki.issue(rogue, directory, "rogue-client", server=False),
    }


def secure_stubs(
    address: str, credentials: grpc.ChannelCredentials
) -> tuple[grpc.Channel, Any, Any]:
    channel = grpc.secure_channel(address, credentials)
    return channel, pb_grpc.DeviceServiceStub(channel), pb_grpc.OperatorServiceStub(channel)


def secure_flow(address: str, credentials: grpc.ChannelCredentials, operator_token: str) -> int:
    """The operator creates a task; a device registers, consents and uploads; returns the examples stored."""
    channel, device, operator = secure_stubs(address, credentials)
    with channel:
        task = pb.Task(
            task_id=TASK_ID,
            app_ids=[APP_ID],
            purpose=PURPOSE,
            input_shape=[1, 16],
            input_dtype=pb.DTYPE_FLOAT32,
            num_classes=3,
        )
        operator.CreateTask(
            pb.CreateTaskRequest(task=task), metadata=bearer(operator_token), timeout=10
        )
        md = bearer(
            device.RegisterDevice(
                pb.RegisterDeviceRequest(app_id=APP_ID, user_id="alice"), timeout=10
            ).device_token
        )
        device.GrantConsent(
            pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"),
            metadata=md,
            timeout=10,
        )
        reply = device.UploadExamples(iter([example_batch("tls")]), metadata=md, timeout=10)
        return int(reply.examples_stored)


def refused(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    """Whether a call over these credentials (None: plaintext) fails before reaching the API."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        try:
            request = pb.RegisterDeviceRequest(app_id="a", user_id="u")
            pb_grpc.DeviceServiceStub(channel).RegisterDevice(request, timeout=5)
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    return False


def test_tls_serves_the_whole_flow_and_refuses_plaintext_and_untrusted_servers(
    server_factory: Callable[..., RunningServer], certificates: dict[str, pki.KeyPair]
) -> None:
    c = certificates
    s = server_factory(tls_cert=c["server"].cert, tls_key=c["server"].key)
    ca = c["ca"].cert.read_bytes()
    assert secure_flow(s.address, grpc.ssl_channel_credentials(ca), s.operator_token) == 8
    assert refused(s.address, None)  # plaintext
    untrusted = grpc.ssl_channel_credentials(
        c["rogue-ca"].cert.read_bytes()
    )  # a CA that did not sign it
    assert refused(s.address, untrusted)


def test_mutual_tls_needs_a_client_certificate_from_the_configured_ca(
    server_factory: Callable[..., RunningServer], certificates: dict[str, pki.KeyPair]
) -> None:
    c = certificates
    s = server_factory(
        tls_cert=c["server"].cert, tls_key=c["server"].key, tls_client_ca=c["ca"].cert
    )
    ca = c["ca"].cert.read_bytes()
    good = grpc.ssl_channel_credentials(ca, **c["client"].client_credentials())
    assert secure_flow(s.address, good, s.operator_token) == 8
    assert refused(s.address, grpc.ssl_channel_credentials(ca))  # no client certificate
    assert refused(
        s.address, grpc.ssl_channel_credentials(ca, **c["rogue-client"].client_credentials())
    )


def test_the_cli_serves_mutual_tls(
    tmp_path: Path,
    certificates: dict[str, pki.KeyPair],
    server_process: Callable[..., ServerProcess],
) -> None:
    c = certificates
    token = secrets.token_urlsafe(32)
    server = server_process(
        tmp_path / "var",
        token,
        "--tls-cert",
        str(c["server"].cert),
        "--tls-key",
        str(c["server"].key),
        "--tls-client-ca",
        str(c["ca"].cert),
    )
    assert "(TLS)" in server.banner
    good = grpc.ssl_channel_credentials(
        c["ca"].cert.read_bytes(), **c["client"].client_credentials()
    )
    assert secure_flow(server.address, good, token) == 8
    assert refused(server.address, grpc.ssl_channel_credentials(c["ca"].cert.read_bytes()))

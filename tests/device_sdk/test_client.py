"""ServerClient against a real server on 127.0.0.1:0: consent, durable uploads, model downloads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from autohas_edge.device_sdk import (
    BundleVerificationError,
    ConsentRequiredError,
    DownloadError,
    Hub,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    ServerClient,
    ServerUnavailableError,
)
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.device_sdk.helpers import APP, TASK, create_bundle_task
from tests.fixtures.bundle_edits import rehash
from tests.fixtures.server_fixtures import RunningServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(
    server_factory: Callable[..., RunningServer], manifest_json: dict, tmp_path: Path
) -> RunningServer:
    """A real server with the SDK's task (the bundle's input shape and classes)."""
    server = server_factory(data_dir=tmp_path / "server-data", download_chunk_bytes=8192)
    create_bundle_task(server, manifest_json)
    return server


def _client(
    server: RunningServer, tmp_path: Path, user: str = "alice", address: str | None = None
) -> ServerClient:
    return ServerClient(
        address or server.address, tmp_path / "sdk-state", app_id=APP, user_id=user, timeout=5
    )


def _examples(global_data: tuple, n: int = 6, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = global_data
    return x[start : start + n], y[start : start + n]


def _stored(server: RunningServer, user: str = "alice") -> int:
    return server.handle.app.store.count_examples(TASK, APP, user)


def test_register_consent_and_upload(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        device_id = client.register()
        assert client.register() == device_id  # kept, not re-registered
        assert client.grant_consent().active and client.has_consent()
        report = client.upload(TASK, *_examples(global_data))
        assert len(report.stored) == 1 and report.pending == 0
        assert _stored(server) == 6
        assert [c.active for c in client.consents()] == [True]


def test_upload_without_consent_stores_nothing(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        with pytest.raises(ConsentRequiredError, match="grant_consent"):
            client.upload(TASK, *_examples(global_data))
        assert client.pending_uploads() == 0 and _stored(server) == 0


def test_bad_examples_are_refused_before_queueing(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        x, y = _examples(global_data)
        with pytest.raises(InvalidInputError, match="shape"):
            client.enqueue(TASK, x[..., :5], y)
        with pytest.raises(InvalidInputError, match="outside"):
            client.enqueue(TASK, x, y + 50)
        assert client.pending_uploads() == 0


def test_a_retried_batch_is_stored_once(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    """The server stored a batch but its answer was lost: the retry reuses the id and is a duplicate."""
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        batch_id = client.enqueue(TASK, *_examples(global_data))
        (queued,) = client.outbox.pending()
        features = pb.Tensor(
            dtype=pb.DTYPE_FLOAT32, shape=queued.features.shape, data=queued.features.tobytes()
        )
        message = pb.ExampleBatch(
            batch_id=batch_id, task_id=TASK, features=features, labels=queued.labels.tolist()
        )
        token = client.outbox.get("device_token")
        server.device.UploadExamples(
            iter([message]), metadata=(("authorization", f"Bearer {token}"),)
        )
        report = client.flush()
        assert report.duplicates == (batch_id,) and report.pending == 0
        assert _stored(server) == 6


_ENQUEUE_AND_HANG = textwrap.dedent("""
    import sys, time
    import numpy as np
    from autohas_edge.device_sdk import ServerClient
    client = ServerClient(sys.argv[1], sys.argv[2], app_id=sys.argv[3], user_id="alice", timeout=2)
    data = np.load(sys.argv[4])
    for i in range(3):
        rows = slice(i * 4, i * 4 + 4)
        print(client.enqueue(sys.argv[5], data["x"][rows], data["y"][rows]), flush=True)
    print("queued", flush=True)
    time.sleep(60)
""")


def test_upload_queue_survives_sigkill_and_restart(
    server_factory: Callable[..., RunningServer],
    server: RunningServer,
    tmp_path: Path,
    global_data: tuple,
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        client.task(TASK)  # cached: enqueueing later needs no network
    server.stop()  # the device goes offline
    data = tmp_path / "examples.npz"
    np.savez(data, x=global_data[0][:12], y=global_data[1][:12])
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _ENQUEUE_AND_HANG,
            server.address,
            str(tmp_path / "sdk-state"),
            APP,
            str(data),
            TASK,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [child.stdout.readline().strip() for _ in range(4)]
    assert lines[-1] == "queued", lines
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with _client(server, tmp_path) as offline:
        assert offline.pending_uploads() == 3
        with pytest.raises(ServerUnavailableError, match="unreachable"):
            offline.flush()
        assert offline.pending_uploads() == 3  # nothing lost by a failed try
    restarted = server_factory(data_dir=server.data_dir)  # same data, new port
    with _client(restarted, tmp_path, address=restarted.address) as client:
        report = client.flush()
        assert set(report.stored) == set(lines[:3]) and report.pending == 0
    assert _stored(restarted) == 12


def test_revoking_consent_purges_the_local_queue(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        client.upload(TASK, *_examples(global_data))
        client.enqueue(TASK, *_examples(global_data, start=10))
        assert client.revoke_consent() == 6  # the server deleted what it had
        assert client.pending_uploads() == 0 and not client.has_consent()
        with pytest.raises(ConsentRequiredError):
            client.enqueue(TASK, *_examples(global_data))


def test_consent_revoked_elsewhere_keeps_queued_batches(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        client.enqueue(TASK, *_examples(global_data))
        other = server.register(APP, "alice")  # the same user's other device revokes
        other.stub.RevokeConsent(
            pb.RevokeConsentRequest(purpose="personalization"), metadata=other.md
        )
        with pytest.raises(ConsentRequiredError, match="consent"):
            client.flush()
        assert client.pending_uploads() == 1 and not client.has_consent()


def test_unregistered_and_unreachable(tmp_path: Path) -> None:
    with ServerClient("127.0.0.1:1", tmp_path, app_id=APP, user_id="bob", timeout=2) as client:
        with pytest.raises(ServerUnavailableError, match="unreachable"):
            client.register()
        with pytest.raises(Exception, match="not registered"):
            client.grant_consent()


def _import(server: RunningServer, bundle: Path) -> str:
    return server.handle.app.models.import_bundle(TASK, "import", bundle).model_id


def test_fetch_model_installs_and_is_idempotent(
    server: RunningServer, bundle_dir: Path, tmp_path: Path, reference: dict, trusted_key: str
) -> None:
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with _client(server, tmp_path) as client:
        client.register()
        with pytest.raises(ModelNotFoundError):
            client.fetch_model(TASK, hub)
        model_id = _import(server, bundle_dir)
        first = client.fetch_model(TASK, hub, formats=["tflite"])
        assert first.updated and first.model_id == model_id == hub.installed(TASK)
        assert not client.fetch_model(TASK, hub).updated
        assert client.fetch_model(
            TASK, hub, formats=["onnx", "tflite"]
        ).updated  # a format it lacked
        assert hub.installed_formats(TASK) == ["onnx", "tflite"]
    model = hub.model(TASK, app_id=APP, format="tflite")
    np.testing.assert_allclose(model.logits(reference["x"]), reference["logits"], atol=1e-3)
    assert not any((hub.root / "downloads").iterdir())


def test_interrupted_download_keeps_the_old_model_and_resumes(
    server_factory: Callable[..., RunningServer],
    server: RunningServer,
    bundle_dir: Path,
    tmp_path: Path,
    global_data: tuple,
    trusted_key: str,
) -> None:
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    x = global_data[0][:20]
    with _client(server, tmp_path) as client:
        client.register()
        old_id = _import(server, bundle_dir)
        client.fetch_model(TASK, hub)
        expected = hub.model(TASK, app_id=APP).predict(x)
        new_id = _import(server, bundle_dir)
        seen: list[tuple[str, int]] = []

        def pull_the_plug(path: str, done: int, total: int) -> None:
            seen.append((path, done))
            if len(seen) == 3:
                server.handle.server.stop(0)  # the connection drops mid-file

        with pytest.raises(ServerUnavailableError):
            client.fetch_model(TASK, hub, on_chunk=pull_the_plug)
    assert hub.installed(TASK) == old_id  # the working model is untouched and still runs offline
    np.testing.assert_array_equal(hub.model(TASK, app_id=APP).predict(x), expected)
    partial = hub.root / "downloads" / new_id
    broken, received = seen[2]  # the file being fetched when the plug was pulled
    kept = sum(p.stat().st_size for p in partial.iterdir() if p.name.startswith(broken))
    assert kept >= received  # every byte received before the drop is on disk
    server.stop()
    restarted = server_factory(data_dir=server.data_dir)
    resumed: list[tuple[str, int]] = []
    with _client(restarted, tmp_path, address=restarted.address) as client:
        result = client.fetch_model(
            TASK, hub, on_chunk=lambda p, done, total: resumed.append((p, done))
        )
    assert result.updated and hub.installed(TASK) == new_id
    again = [done for p, done in resumed if p == broken]
    assert not again or again[0] > kept  # continued from the break, not from the start
    np.testing.assert_allclose(hub.model(TASK, app_id=APP).predict(x), expected, atol=1e-6)


def test_a_tampered_bundle_on_the_server_is_refused(
    server: RunningServer, bundle_copy: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    """The hash and reference-output checks under the signature (this hub pins no key)."""
    hub = Hub(tmp_path / "hub", allow_unsigned=True)
    with _client(server, tmp_path) as client:
        client.register()
        good = _import(server, bundle_dir)
        client.fetch_model(TASK, hub)
        (bundle_copy / "features.onnx").write_bytes((bundle_copy / "model.onnx").read_bytes())
        rehash(bundle_copy, "features.onnx")  # hashes consistent, content wrong
        _import(server, bundle_copy)
        with pytest.raises(BundleVerificationError, match=r"features\.onnx"):
            client.fetch_model(TASK, hub, formats=["onnx", "tflite"])
        assert hub.installed(TASK) == good
        corrupted = _import(server, bundle_dir)
        target = server.handle.app.models.bundle_dir(corrupted) / "features.onnx"
        data = bytearray(target.read_bytes())
        data[100] ^= 0xFF  # bit rot on the server after it recorded the hash
        target.write_bytes(bytes(data))
        with pytest.raises(DownloadError, match="sha256"):
            client.fetch_model(TASK, hub, formats=["onnx", "tflite"])
    assert hub.installed(TASK) == good
    hub.model(TASK, app_id=APP).predict(
        np.zeros(hub.model(TASK, app_id=APP).input_shape, np.float32)
    )


def test_status_codes_map_to_sdk_errors() -> None:
    from autohas_edge.device_sdk.client import map_rpc_error

    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode, details: str) -> None:
            self._code, self._details = code, details

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return self._details

    assert isinstance(
        map_rpc_error(Failed(grpc.StatusCode.NOT_FOUND, "no model"), "X", "a"), NotFoundError
    )
    error = map_rpc_error(
        Failed(grpc.StatusCode.FAILED_PRECONDITION, "no active consent"), "X", "a"
    )
    assert isinstance(error, ConsentRequiredError) and error.code == "FAILED_PRECONDITION"
    busy = map_rpc_error(
        Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many open streams"), "X", "a"
    )
    assert isinstance(busy, ServerUnavailableError) and "busy" in str(busy)
    too_big = map_rpc_error(
        Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 4)"),
        "X",
        "a",
    )
    assert not isinstance(too_big, ServerUnavailableError)


def test_a_revocation_made_offline_reaches_the_server_first(
    server_factory: Callable[..., RunningServer],
    server: RunningServer,
    tmp_path: Path,
    global_data: tuple,
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        client.grant_consent()
        client.upload(TASK, *_examples(global_data))
        client.enqueue(TASK, *_examples(global_data, start=10))
    server.stop()
    with _client(server, tmp_path) as offline:
        with pytest.raises(ServerUnavailableError):
            offline.revoke_consent()
        assert (
            offline.pending_uploads() == 0 and not offline.has_consent()
        )  # local part done at once
    restarted = server_factory(data_dir=server.data_dir)
    assert _stored(restarted) == 6
    with _client(restarted, tmp_path, address=restarted.address) as client:
        assert [c.active for c in client.consents()] == [False]  # sent before ListConsents
    assert _stored(restarted) == 0


def test_consent_granted_on_another_device_is_picked_up(
    server: RunningServer, tmp_path: Path, global_data: tuple
) -> None:
    with _client(server, tmp_path) as client:
        client.register()
        other = server.register(APP, "alice")
        other.stub.GrantConsent(
            pb.GrantConsentRequest(purpose="personalization", consent_text_version="2"),
            metadata=other.md,
        )
        assert len(client.upload(TASK, *_examples(global_data)).stored) == 1

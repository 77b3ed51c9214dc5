"""Bundle signatures: a hub installs only bundles signed by a key its app pins (issue 17, item 6)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.common.filetable import MANIFEST, files_table, table_to_json
from autohas_edge.device_sdk import (
    BundleSignatureError,
    Hub,
    ServerClient,
    SigningKeyError,
)
from autohas_edge.device_sdk.signing import SCHEME, SIGNATURE_FILE, key_id, signed_payload
from autohas_edge.export.signing import generate_key, load_private_key, sign_bundle
from tests.device_sdk.helpers import APP, TASK, create_bundle_task
from tests.fixtures.bundle_edits import always_class_zero, rehash
from tests.fixtures.server_fixtures import RunningServer


def sign_without_manifest(bundle: Path, key_file: Path) -> None:
    """A signature by the trusted key whose file list leaves manifest.json out."""
    key = load_private_key(key_file)
    signer = key_id(key.public_key())
    table = files_table(bundle)  # the manifest is left out
    signature = key.sign(signed_payload(SCHEME, signer, table))
    document = {
        "scheme": SCHEME,
        "key_id": signer,
        "files": table_to_json(table),
        "signature": base64.b64encode(signature).decode(),
    }
    (bundle / SIGNATURE_FILE).write_text(json.dumps(document))


@pytest.fixture
def evil_bundle(bundle_copy: Path) -> Path:
    always_class_zero(bundle_copy)
    return bundle_copy


def test_a_hand_built_class_zero_bundle_passes_every_other_check_but_is_refused(
    evil_bundle: Path, tmp_path: Path, trusted_key: str, global_data: tuple
) -> None:
    x = global_data[0][:20]
    opted_out = Hub(tmp_path / "opted-out", allow_unsigned=True)  # what every hub did before
    opted_out.install(evil_bundle, TASK, formats=["onnx"])
    assert (opted_out.model(TASK, app_id=APP).predict(x).argmax(axis=1) == 0).all()
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(BundleSignatureError, match=r"no signature\.json: unsigned bundles"):
        hub.install(evil_bundle, TASK, formats=["onnx"])
    assert hub.installed(TASK) is None and not any((hub.root / "bundles").iterdir())
    with pytest.raises(BundleSignatureError, match="unsigned bundles are refused"):
        Hub(tmp_path / "default").install(evil_bundle, TASK, formats=["onnx"])


def test_a_bundle_signed_by_another_key_is_refused(
    evil_bundle: Path, tmp_path: Path, trusted_key: str
) -> None:
    generate_key(tmp_path / "attacker.pem")
    sign_bundle(evil_bundle, load_private_key(tmp_path / "attacker.pem"))
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(BundleSignatureError, match="which this app does not trust"):
        hub.install(evil_bundle, TASK, formats=["onnx"])
    assert hub.installed(TASK) is None


def test_a_tampered_file_is_refused_even_with_the_manifest_rehashed(
    bundle_copy: Path, tmp_path: Path, trusted_key: str
) -> None:
    with np.load(bundle_copy / "head.npz") as head:
        np.savez(bundle_copy / "head.npz", weight=head["weight"][::-1].copy(), bias=head["bias"])
    rehash(bundle_copy, "head.npz")  # the manifest agrees with the new head; the signature cannot
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(BundleSignatureError, match=r"manifest\.json: sha256 mismatch"):
        hub.install(bundle_copy, TASK)
    document = json.loads((bundle_copy / SIGNATURE_FILE).read_text())
    document["files"][MANIFEST] = {
        "sha256": __import__("hashlib").sha256((bundle_copy / MANIFEST).read_bytes()).hexdigest(),
        "bytes": (bundle_copy / MANIFEST).stat().st_size,
    }
    (bundle_copy / SIGNATURE_FILE).write_text(json.dumps(document))  # and the signed list too
    with pytest.raises(BundleSignatureError, match="signature does not match"):
        hub.install(bundle_copy, TASK)
    assert hub.installed(TASK) is None


def test_a_signature_that_leaves_the_manifest_out_is_refused(
    evil_bundle: Path, tmp_path: Path, trusted_key: str, signing_key_file: Path
) -> None:
    sign_without_manifest(evil_bundle, signing_key_file)
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with pytest.raises(
        BundleSignatureError, match=r"manifest\.json is not in the signed file list"
    ):
        hub.install(evil_bundle, TASK, formats=["onnx"])


def test_a_signed_bundle_installs_and_predicts_offline(
    bundle_dir: Path, tmp_path: Path, trusted_key: str, reference: dict
) -> None:
    hub = Hub(tmp_path / "hub", trusted_keys=trusted_key)  # one PEM string is one key
    hub.install(bundle_dir, TASK, formats=["onnx"])
    logits = hub.model(TASK, app_id=APP).logits(reference["x"])
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-3)
    (installed,) = (hub.root / "bundles").iterdir()
    assert (installed / SIGNATURE_FILE).is_file()  # kept with the bundle it vouches for


def test_bad_trusted_keys_are_named() -> None:
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        Hub.__new__(Hub).__init__("/nonexistent-hub", trusted_keys=["not a key"])


@pytest.fixture
def signing_server(
    server_factory: Callable[..., RunningServer],
    manifest_json: dict,
    tmp_path: Path,
    signing_key_file: Path,
) -> RunningServer:
    """A server that signs every bundle it registers with the test key."""
    key = tmp_path / "server-key.pem"
    shutil.copyfile(signing_key_file, key)
    key.chmod(0o600)
    server = server_factory(data_dir=tmp_path / "server", signing_key=key)
    create_bundle_task(server, manifest_json)
    return server


def test_a_server_signed_bundle_downloads_installs_and_predicts(
    signing_server: RunningServer,
    bundle_dir: Path,
    tmp_path: Path,
    trusted_key: str,
    reference: dict,
) -> None:
    model_id = signing_server.handle.app.models.import_bundle(TASK, "import", bundle_dir).model_id
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    other = Hub(tmp_path / "other", trusted_keys=[_other_public_key(tmp_path)])
    with _client(signing_server, tmp_path) as client:
        client.register()
        assert client.fetch_model(TASK, hub, formats=["onnx"]).model_id == model_id
        with pytest.raises(BundleSignatureError, match="does not trust"):
            client.fetch_model(TASK, other, formats=["onnx"])
    logits = hub.model(TASK, app_id=APP).logits(reference["x"])
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-3)
    assert other.installed(TASK) is None


def test_an_unsigned_bundle_from_a_server_is_refused(
    server_factory: Callable[..., RunningServer],
    manifest_json: dict,
    evil_bundle: Path,
    tmp_path: Path,
    trusted_key: str,
) -> None:
    server = server_factory(data_dir=tmp_path / "server")  # no --signing-key: a compromised server
    create_bundle_task(server, manifest_json)
    server.handle.app.models.import_bundle(TASK, "import", evil_bundle)
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    with _client(server, tmp_path) as client:
        client.register()
        with pytest.raises(BundleSignatureError, match="unsigned bundles are refused"):
            client.fetch_model(TASK, hub, formats=["onnx"])
    assert hub.installed(TASK) is None


def _client(server: RunningServer, tmp_path: Path) -> ServerClient:
    return ServerClient(server.address, tmp_path / "state", app_id=APP, user_id="u-1")


def _other_public_key(tmp_path: Path) -> str:
    public, _ = generate_key(tmp_path / "other.pem")
    return public.read_text()

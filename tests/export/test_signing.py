"""`autohas keygen`, `autohas export --signing-key` and the server's `--signing-key` (issue 17)."""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

import pytest

from autohas_edge.device_sdk import Hub
from autohas_edge.device_sdk.signing import SIGNATURE_FILE
from autohas_edge.export import verify_bundle
from autohas_edge.export.signing import SigningKeyFileError, load_private_key, public_key_path
from autohas_edge.server.app import make_server
from autohas_edge.server.cli import main
from autohas_edge.server.config import ServerConfig


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "keys" / "bundles.pem"
    assert main(["keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = public_key_path(key)
    assert public.name == "bundles.pub.pem" and "PUBLIC KEY" in public.read_text()
    assert "ed25519:" in capsys.readouterr().out
    before = key.read_bytes()
    assert main(["keygen", str(key)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"autohas keygen: {key} exists; it is never overwritten"
    )
    assert key.read_bytes() == before


def test_export_signs_with_the_key_and_the_hub_pinning_it_installs(
    tiny_run: Path, tmp_path: Path
) -> None:
    key = tmp_path / "k.pem"
    assert main(["keygen", str(key)]) == 0
    out = tmp_path / "dist"
    args = ["export", str(tiny_run), "--formats", "onnx", "--out", str(out)]
    assert main([*args, "--signing-key", str(key)]) == 0
    bundle = out / tiny_run.name
    document = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert "manifest.json" in document["files"] and SIGNATURE_FILE not in document["files"]
    assert verify_bundle(bundle).passed  # `autohas verify` accepts the extra file
    hub = Hub(tmp_path / "hub", trusted_keys=[public_key_path(key).read_text()])
    hub.install(bundle, "t")
    assert hub.installed_formats("t") == ["onnx"]


def test_bad_signing_keys_are_one_line_errors(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k.pem"
    assert main(["keygen", str(key)]) == 0
    key.chmod(0o644)
    args = ["export", str(tiny_run), "--formats", "onnx", "--out", str(tmp_path / "d")]
    assert main([*args, "--signing-key", str(key)]) == 2
    assert "is readable by others (mode 644): chmod 600 it" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    assert main([*args, "--signing-key", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autohas export: signing key {garbage}: not an unencrypted PEM key")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
    with pytest.raises(SigningKeyFileError, match="No such file"):
        load_private_key(tmp_path / "missing.pem")


def test_a_server_with_a_bad_signing_key_does_not_start(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("not a key")
    key.chmod(0o600)
    config = ServerConfig(
        data_dir=tmp_path / "server", operator_token=secrets.token_urlsafe(32), signing_key=key
    )
    with pytest.raises(ValueError, match="not an unencrypted PEM key"):
        make_server(config)

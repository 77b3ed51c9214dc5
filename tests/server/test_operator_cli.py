"""`autohas tasks|jobs|models|audit` against a real server on 127.0.0.1:0 (fake engine), plaintext and
TLS, the token from the environment or a file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from autohas_edge.export.verify import verify_bundle
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.cli import main
from tests.fixtures.network import outward_ip
from tests.fixtures.server_fixtures import PURPOSE, RunningServer, example_batch
from tests.server import pki

APP = "com.example.gestures"


def _cli(s: RunningServer, *argv: str) -> list[str]:
    return [argv[0], "--address", s.address, *argv[1:]]


def _uploaded(s: RunningServer, task_id: str) -> None:
    device = s.register(app_id=APP, user_id="alice")
    grant = pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1")
    device.stub.GrantConsent(grant, metadata=device.md)
    batch = example_batch("b1", n=12, task_id=task_id)
    device.stub.UploadExamples(iter([batch]), metadata=device.md)


def test_tasks_jobs_and_audit_from_the_command_line(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    s = running_server
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", s.operator_token)
    create = ["create", "t1", "--app-id", APP, "--purpose", PURPOSE, "--input-shape", "1,16"]
    assert main(_cli(s, "tasks", *create, "--num-classes", "4", "--layout", "signal")) == 0
    assert main(_cli(s, "tasks", "list")) == 0
    assert "t1  apps com.example.gestures" in capsys.readouterr().out
    _uploaded(s, "t1")
    assert main(_cli(s, "jobs", "start", "t1", "--steps", "5", "--watch")) == 0
    out = capsys.readouterr()
    job_id = out.out.split()[2]
    assert f"{job_id}  t1  succeeded" in out.out and "search" in out.err  # the bar's label
    assert main(_cli(s, "jobs", "get", job_id)) == 0
    assert "architecture block0.kernel = 3" in capsys.readouterr().out
    assert main(_cli(s, "jobs", "list", "--task-id", "t1")) == 0
    assert job_id in capsys.readouterr().out
    assert main(_cli(s, "audit", job_id)) == 0
    assert "alice  12 examples  consent v1" in capsys.readouterr().out
    # a refused call: one line, the status named
    assert main(_cli(s, "jobs", "get", "job-0000000000000000")) == 2
    err = capsys.readouterr().err
    assert err.startswith("autohas jobs: NOT_FOUND") and len(err.splitlines()) == 1


def test_a_running_job_is_cancelled(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    s = running_server
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", s.operator_token)
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.5")
    s.create_task(app_ids=(APP,))
    _uploaded(s, "gestures")
    assert main(_cli(s, "jobs", "start", "gestures", "--steps", "200")) == 0
    job_id = capsys.readouterr().out.split()[2]
    assert main(_cli(s, "jobs", "cancel", job_id)) == 0
    assert main(_cli(s, "jobs", "watch", job_id)) == 1  # it did not succeed
    assert f"{job_id}  gestures  cancelled" in capsys.readouterr().out


def test_a_model_downloads_from_a_token_file_and_verifies(
    running_server: RunningServer,
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    s = running_server
    monkeypatch.delenv("AUTOHAS_OPERATOR_TOKEN", raising=False)
    s.create_task(input_shape=(1, 40), num_classes=10)
    model_id = s.handle.app.models.import_bundle("gestures", "job-x", tiny_bundle).model_id
    token = tmp_path / "token"
    token.write_text(s.operator_token + "\n")
    base = ["--token-file", str(token)]
    assert main(_cli(s, "models", *base, "list", "gestures")) == 0
    assert model_id in capsys.readouterr().out
    out = tmp_path / "bundle"
    assert (
        main(_cli(s, "models", *base, "download", "--task-id", "gestures", "--out", str(out))) == 0
    )
    assert verify_bundle(out).passed


def test_without_a_token_or_with_a_wrong_one_the_error_is_one_line(
    running_server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    s = running_server
    monkeypatch.delenv("AUTOHAS_OPERATOR_TOKEN", raising=False)
    assert main(_cli(s, "tasks", "list")) == 2
    assert "no operator token: set $AUTOHAS_OPERATOR_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", "x" * 32)
    assert main(_cli(s, "tasks", "list")) == 2
    assert capsys.readouterr().err.startswith("autohas tasks: UNAUTHENTICATED")


def test_tls_with_a_root_certificate(
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    ca = pki.make_ca(tmp_path, "ca")
    cert = pki.issue(ca, tmp_path, "server", server=True)
    s = server_factory(tls_cert=cert.cert, tls_key=cert.key)
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", s.operator_token)
    address = s.address.replace("127.0.0.1", "localhost")
    argv = ["tasks", "--address", address, "--tls-root-cert", str(ca.cert), "list"]
    assert main(argv) == 0
    plaintext = ["tasks", "--address", address, "list"]
    assert main(plaintext) == 2  # a plaintext client cannot talk to a TLS server
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_tls_is_the_default_off_loopback(
    server_factory: Callable[..., RunningServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    ip = outward_ip()
    s = server_factory(host=ip, insecure=True)  # a plaintext server on the network
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", s.operator_token)
    address = f"{ip}:{s.address.rsplit(':', 1)[1]}"
    assert main(["tasks", "--address", address, "list"]) == 2  # never spoken to in plaintext
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert main(["tasks", "--address", address, "--plaintext", "list"]) == 0
    with pytest.raises(SystemExit) as refused:  # argparse: one usage line, exit code 2
        main(["tasks", "--address", address, "--plaintext", "--tls", "list"])
    assert refused.value.code == 2

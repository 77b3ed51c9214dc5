"""The assembled server: health, reflection, one server per data dir, restart, TLS, and the CLI."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server.app import DataDirInUse, make_server
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.serve_cli import add_arguments, config_from_args
from tests.fixtures.server_fixtures import (
    PURPOSE,
    TASK_ID,
    RunningServer,
    SeededServer,
    bearer,
    example_batch,
    start_server,
)

TOKEN = secrets.token_urlsafe(32)

ROOT = Path(__file__).resolve().parents[2]


def test_health_and_reflection_work_without_a_token(
    server_factory: Callable[..., RunningServer],
) -> None:
    running_server = server_factory(reflection=True)
    health = health_pb2_grpc.HealthStub(running_server.channel)
    for service in ("", "autohas.v1.DeviceService", "autohas.v1.OperatorService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(running_server.channel).get_services())
    assert {
        "autohas.v1.DeviceService",
        "autohas.v1.OperatorService",
        "grpc.health.v1.Health",
    } <= services


def test_a_second_server_on_the_same_data_dir_is_refused(running_server: RunningServer) -> None:
    config = running_server.config.replace(port=0)
    with pytest.raises(DataDirInUse, match="in use"):
        make_server(config)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="operator_token"):
        ServerConfig(data_dir=Path("x"), operator_token="short")
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        ServerConfig(data_dir=Path("x"), operator_token=TOKEN, tls_cert=Path("c.pem"))
    with pytest.raises(ValueError, match="download_chunk_bytes"):
        ServerConfig(data_dir=Path("x"), operator_token=TOKEN, max_message_bytes=1000)
    with pytest.raises(ValueError, match="max_streams"):
        ServerConfig(
            data_dir=Path("x"),
            operator_token=TOKEN,
            rpc_threads=8,
            max_watch_streams=2,
            max_streams=8,
        )
    with pytest.raises(ValueError, match="stream_idle_timeout_s"):
        ServerConfig(data_dir=Path("x"), operator_token=TOKEN, stream_idle_timeout_s=float("nan"))


def test_streams_leave_a_quarter_of_the_threads_to_unary_calls() -> None:
    config = ServerConfig(data_dir=Path("x"), operator_token=TOKEN)
    assert (config.rpc_threads, config.open_streams) == (32, 24)
    assert config.replace(rpc_threads=4, max_watch_streams=1).open_streams == 2
    assert config.replace(max_streams=5).open_streams == 5


def test_a_restart_keeps_everything_acknowledged(
    seeded_server: SeededServer, server_factory: Callable[..., RunningServer]
) -> None:
    first, device = seeded_server.server, seeded_server.device
    batches = [example_batch(f"b{i}", seed=i) for i in range(5)]
    ack = device.stub.UploadExamples(iter(batches), metadata=device.md)
    assert ack.examples_stored == 40
    first.stop()
    second = server_factory(data_dir=first.data_dir, operator_token=first.operator_token)
    stub = pb_grpc.DeviceServiceStub(second.channel)
    task = stub.GetTask(
        pb.GetTaskRequest(task_id=TASK_ID), metadata=device.md
    )  # the token still works
    assert task.purpose == PURPOSE
    consents = stub.ListConsents(pb.ListConsentsRequest(), metadata=device.md).consents
    assert [c.active for c in consents] == [True]
    retry = stub.UploadExamples(iter(batches), metadata=device.md)
    assert len(retry.duplicate_batch_ids) == 5 and retry.examples_stored == 0
    assert second.handle.app.store.count_examples(TASK_ID) == 40


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(directory: Path) -> dict[str, Path]:
    """A test CA and, signed by it, a server certificate for 127.0.0.1 / localhost and a client one."""
    p = {name: directory / name for name in ("ca.pem", "ca.key", "san.ext")}
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(p["ca.key"]),
        "-out",
        str(p["ca.pem"]),
    )
    p["san.ext"].write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for who in ("server", "client"):
        key, csr, cert = (
            directory / f"{who}.key",
            directory / f"{who}.csr",
            directory / f"{who}.pem",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={who}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        extension = ["-extfile", str(p["san.ext"])] if who == "server" else []
        openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(p["ca.pem"]),
            "-CAkey",
            str(p["ca.key"]),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(cert),
            *extension,
        )
        p[f"{who}.key"], p[f"{who}.pem"] = key, cert
    return p


def list_tasks(server: RunningServer, credentials: grpc.ChannelCredentials) -> list[pb.Task]:
    with grpc.secure_channel(server.address, credentials) as channel:
        stub = pb_grpc.OperatorServiceStub(channel)
        return list(stub.ListTasks(pb.ListTasksRequest(), metadata=server.op_md, timeout=10).tasks)


def test_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    ca = pki["ca.pem"].read_bytes()
    client_cert = {
        "private_key": pki["client.key"].read_bytes(),
        "certificate_chain": pki["client.pem"].read_bytes(),
    }
    tls = start_server(tmp_path / "tls", tls_cert=pki["server.pem"], tls_key=pki["server.key"])
    try:
        assert list_tasks(tls, grpc.ssl_channel_credentials(ca)) == []
        with pytest.raises(grpc.RpcError):  # a plaintext client gets nothing
            tls.operator.ListTasks(pb.ListTasksRequest(), metadata=tls.op_md, timeout=3)
    finally:
        tls.stop()
    mtls = start_server(
        tmp_path / "mtls",
        tls_cert=pki["server.pem"],
        tls_key=pki["server.key"],
        tls_client_ca=pki["ca.pem"],
    )
    try:
        assert list_tasks(mtls, grpc.ssl_channel_credentials(ca, **client_cert)) == []
        with pytest.raises(grpc.RpcError):  # no client certificate: the handshake fails
            list_tasks(mtls, grpc.ssl_channel_credentials(ca))
    finally:
        mtls.stop()


def test_the_cli_prints_its_port_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    env = {**os.environ, "AUTOHAS_OPERATOR_TOKEN": token, "PYTHONPATH": str(ROOT)}
    data_dir = str(tmp_path / "var")
    command = [
        sys.executable,
        "-m",
        "autohas_edge.server.cli",
        "server",
        "--data-dir",
        data_dir,
        "--port",
        "0",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"listening on (127\.0\.0\.1:(\d+))", line)
        assert match and int(match.group(2)) > 0, line
        with grpc.insecure_channel(match.group(1)) as channel:
            stub = pb_grpc.OperatorServiceStub(channel)
            assert (
                stub.ListTasks(pb.ListTasksRequest(), metadata=bearer(token), timeout=10).tasks
                == []
            )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_cli_makes_an_operator_token_file_once_and_rejects_a_weak_token(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data-dir", str(tmp_path / "var")])
    env = os.environ.pop("AUTOHAS_OPERATOR_TOKEN", None)
    try:
        first, source = config_from_args(args)
        second, _ = config_from_args(args)
    finally:
        if env is not None:
            os.environ["AUTOHAS_OPERATOR_TOKEN"] = env
    token_file = tmp_path / "var" / "operator_token"
    assert source == str(token_file) and first.operator_token == second.operator_token
    assert len(first.operator_token) >= 43 and (token_file.stat().st_mode & 0o777) == 0o600
    (tmp_path / "weak").write_text("1234\n")
    with pytest.raises(ValueError, match="operator_token"):
        config_from_args(parser.parse_args(["--operator-token-file", str(tmp_path / "weak")]))

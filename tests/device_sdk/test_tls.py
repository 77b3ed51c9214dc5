"""ServerClient over TLS against a real server with a self-signed certificate made here (issue 17)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from autohas_edge.device_sdk import ClientConfigError, ServerClient, ServerUnavailableError
from autohas_edge.device_sdk.client import is_loopback
from autohas_edge.server.app import ServerHandle, make_server
from autohas_edge.server.config import ServerConfig
from tests.fixtures.network import outward_ip
from tests.fixtures.server_fixtures import FAKE_ENGINE

APP = "com.example.keyboard"


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A self-signed EC P-256 server certificate for `hosts` (IPs or names); (cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autohas-test")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """Start a real server: `start(host, tls_cert=..., tls_key=...)`; stopped at teardown."""
    handles: list[ServerHandle] = []

    def factory(host: str, **tls: Path) -> ServerHandle:
        config = ServerConfig(
            data_dir=tmp_path / f"server{len(handles)}",
            operator_token=secrets.token_urlsafe(32),
            host=host,
            port=0,
            engine=FAKE_ENGINE,
            insecure=True,  # a plaintext server on the network: what the client must refuse
            **tls,
        )
        handle = make_server(config)
        handle.start()
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        handle.stop(grace=0.2)


def _client(address: str, tmp_path: Path, **options: object) -> ServerClient:
    return ServerClient(
        address, tmp_path / "state", app_id=APP, user_id="u-1", timeout=5.0, **options
    )


def test_a_tls_server_with_a_self_signed_certificate_is_reached_with_its_root(
    start, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, ["localhost", "127.0.0.1"])
    handle = start("127.0.0.1", tls_cert=cert, tls_key=key)
    with _client(handle.address, tmp_path, root_certificates=cert.read_bytes()) as client:
        assert client.tls and client.register()
    with (
        _client(handle.address, tmp_path / "plain") as plain,  # loopback: plaintext by default
        pytest.raises(ServerUnavailableError),
    ):
        plain.register()
    (tmp_path / "other").mkdir()
    other, _ = self_signed(tmp_path / "other", ["localhost", "127.0.0.1"])
    with (
        _client(handle.address, tmp_path / "wrong", root_certificates=other.read_bytes()) as wrong,
        pytest.raises(ServerUnavailableError),
    ):
        wrong.register()  # a certificate the app does not trust: no connection


def test_tls_is_on_by_default_for_a_non_loopback_address(start, tmp_path: Path) -> None:
    ip = outward_ip()
    plain = start(ip)  # a plaintext server on the network
    with _client(plain.address, tmp_path / "a") as client:
        assert client.tls
        with pytest.raises(ServerUnavailableError):
            client.register()  # never spoken to in plaintext
    with _client(plain.address, tmp_path / "b", tls=False) as opted_out:
        assert not opted_out.tls and opted_out.register()
    (tmp_path / "pki").mkdir()
    cert, key = self_signed(tmp_path / "pki", [ip])
    secure = start(ip, tls_cert=cert, tls_key=key)
    with _client(secure.address, tmp_path / "c", root_certificates=cert.read_bytes()) as client:
        assert client.tls and client.register()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/tmp/autohas.sock", True),
        ("10.0.0.5:50051", False),
        ("[2001:db8::1]:443", False),
        ("models.example.com:443", False),
        ("dns:///models.example.com:443", False),
    ],
)
def test_which_addresses_count_as_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_contradictory_tls_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ClientConfigError, match="tls=False"):
        _client("10.0.0.5:1", tmp_path, tls=False, root_certificates=b"pem")

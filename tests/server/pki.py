"""Throwaway certificates for TLS tests, made with the `openssl` command (EC P-256 keys: fast to make).

The `cryptography` package is not installed in this environment, so the tests drive the OpenSSL CLI.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its private key."""

    cert: Path
    key: Path

    def client_credentials(self) -> dict[str, bytes]:
        """Keyword arguments for `grpc.ssl_channel_credentials` presenting this certificate."""
        return {"private_key": self.key.read_bytes(), "certificate_chain": self.cert.read_bytes()}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> KeyPair:
    """A self-signed CA valid for two days."""
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(pair.key),
        "-out",
        str(pair.cert),
    )
    return pair


def issue(ca: KeyPair, directory: Path, name: str, server: bool) -> KeyPair:
    """A certificate signed by `ca`: for 127.0.0.1 / localhost when `server`, else a client certificate."""
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    _openssl("req", *EC_KEY, "-subj", f"/CN={name}", "-keyout", str(pair.key), "-out", str(csr))
    usage = "serverAuth" if server else "clientAuth"
    san = "subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else ""
    ext.write_text(f"{san}extendedKeyUsage={usage}\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca.cert),
        "-CAkey",
        str(ca.key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(pair.cert),
    )
    return pair

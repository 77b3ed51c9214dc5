"""Sign bundles (the exporter's and the server's side of `device_sdk.signing`) and make signing keys.

The private key is an unencrypted PKCS#8 PEM file readable by its owner alone (`autohas keygen`
writes it 0600 and refuses to overwrite one); its public half (`*.pub.pem`) is what apps pin.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from autohas_edge.common.filetable import files_table
from autohas_edge.common.fs import atomic_write_json
from autohas_edge.device_sdk.signing import SCHEME, SIGNATURE_FILE, key_id, signed_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PUBLIC_SUFFIX = ".pub.pem"


class SigningKeyFileError(ValueError):
    """A signing key file is missing, readable by others, or not an Ed25519 private key in PEM."""


def public_key_path(private_path: Path) -> Path:
    """Where `autohas keygen` puts the public half of `private_path` (`key.pem` -> `key.pub.pem`)."""
    private_path = Path(private_path)
    stem = private_path.name.removesuffix(".pem")
    return private_path.with_name(stem + PUBLIC_SUFFIX)


def generate_key(private_path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 key pair (private 0600, public beside it); returns the public path and id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    private_path, public_path = Path(private_path), public_key_path(private_path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key()
    public_path.write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return public_path, key_id(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`; SigningKeyFileError naming what is wrong with it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyFileError(f"signing key {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyFileError(
            f"signing key {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyFileError(
            f"signing key {path}: not an unencrypted PEM key ({exc})"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyFileError(f"signing key {path}: a {type(key).__name__}, not Ed25519")
    return key


def sign_bundle(bundle: Path, key: Ed25519PrivateKey) -> str:
    """Write `bundle/signature.json` over every file of the bundle, manifest included; returns the key id."""
    signer = key_id(key.public_key())
    table = files_table(Path(bundle), with_manifest=True)
    table.pop(SIGNATURE_FILE, None)  # an older signature is replaced, never signed
    signature = key.sign(signed_payload(SCHEME, signer, table))
    document = {
        "scheme": SCHEME,
        "key_id": signer,
        "files": {p: e.to_json() for p, e in table.items()},
        "signature": base64.b64encode(signature).decode(),
    }
    atomic_write_json(Path(bundle) / SIGNATURE_FILE, document, mode=0o644)
    return signer

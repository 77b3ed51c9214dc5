"""Bundle signatures: Ed25519 over the bundle's file table, `manifest.json` included.

A signed bundle carries `signature.json`::

    {"scheme": "autohas-bundle-signature/1", "key_id": "ed25519:…", "files": {path: {sha256, bytes}},
     "signature": "<base64 Ed25519 signature>"}

The signature covers the canonical JSON of everything but `signature`. `manifest.json` must be one of
the signed files: its hash then vouches for every file the manifest lists (and for their reference
outputs), so nothing of the bundle can change without breaking the signature. The exporter or server
signs (`autohas_edge.export.signing`); an app pins the public keys it trusts (`Hub(trusted_keys=...)`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autohas_edge.common.filetable import MANIFEST, FileEntry, file_problem, table_from_json
from autohas_edge.device_sdk.errors import BundleSignatureError, SigningKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_FILE = "signature.json"
SCHEME = "autohas-bundle-signature/1"
#: a signature document is a few KiB (one line per bundle file); anything larger is refused unread
MAX_SIGNATURE_BYTES = 1 << 20


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name of a public key: `ed25519:` + 16 hex digits of its raw bytes' sha256."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(key: str | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text/bytes (what `autohas keygen` writes to `*.pub.pem`)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(key, Ed25519PublicKey):
        return key
    data = key.encode() if isinstance(key, str) else key
    try:
        loaded = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningKeyError(f"a {type(loaded).__name__}, not an Ed25519 public key")
    return loaded


def signed_payload(scheme: str, signer: str, files: Mapping[str, FileEntry]) -> bytes:
    """The exact bytes an Ed25519 signature covers (canonical JSON: sorted keys, no spaces)."""
    body = {"scheme": scheme, "key_id": signer, "files": {p: e.to_json() for p, e in files.items()}}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class TrustPolicy:
    """Which bundles a hub installs: those signed by one of `keys`, and unsigned ones if allowed."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    allow_unsigned: bool = False

    @classmethod
    def of(
        cls, trusted_keys: Iterable[str | bytes | Ed25519PublicKey], allow_unsigned: bool
    ) -> TrustPolicy:
        """The policy of `Hub(trusted_keys=..., allow_unsigned=...)`; SigningKeyError on a bad key."""
        if isinstance(trusted_keys, (str, bytes)):  # one PEM, not an iterable of characters
            trusted_keys = [trusted_keys]
        loaded = [load_public_key(k) for k in trusted_keys]
        return cls({key_id(k): k for k in loaded}, bool(allow_unsigned))

    def check(self, bundle_dir: Path) -> str | None:
        """The id of the trusted key that signed `bundle_dir`, or None for an allowed unsigned bundle.

        BundleSignatureError when the bundle is unsigned (and that is not allowed), its signature is
        malformed, made by a key the app does not trust, or does not match the bundle's files.
        """
        path = Path(bundle_dir) / SIGNATURE_FILE
        if not path.is_file() or not self.keys:
            if self.allow_unsigned:
                return None  # nothing to check it against: the app opted out of authenticity
            raise BundleSignatureError(self._refusal(path.is_file()))
        document = _read_document(path)
        signer = str(document["key_id"])
        if signer not in self.keys:
            raise BundleSignatureError(
                f"the bundle is signed by key {signer}, which this app does not trust "
                f"(it trusts {sorted(self.keys)})"
            )
        files = _verify(self.keys[signer], document)
        if MANIFEST not in files:
            raise BundleSignatureError(f"{MANIFEST} is not in the signed file list: refused")
        problem = file_problem(Path(bundle_dir) / MANIFEST, files[MANIFEST], MANIFEST)
        if problem:
            raise BundleSignatureError(f"the signed file list does not match: {problem}")
        return signer

    def _refusal(self, signed: bool) -> str:
        if signed:
            return (
                "the bundle is signed but this hub pins no key to check it with: "
                "pass Hub(trusted_keys=[public key PEM])"
            )
        return (
            f"the bundle has no {SIGNATURE_FILE}: unsigned bundles are refused (sign it with "
            "`autohas export --signing-key` or the server's --signing-key; or opt out with "
            "Hub(allow_unsigned=True))"
        )


def _read_document(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise BundleSignatureError(f"{SIGNATURE_FILE} is larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise BundleSignatureError(f"{SIGNATURE_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("scheme") != SCHEME:
        raise BundleSignatureError(f"{SIGNATURE_FILE} is not an {SCHEME} document")
    missing = [k for k in ("key_id", "files", "signature") if k not in document]
    if missing:
        raise BundleSignatureError(f"{SIGNATURE_FILE} has no {missing[0]!r}")
    return document


def _verify(public_key: Ed25519PublicKey, document: dict[str, Any]) -> dict[str, FileEntry]:
    from cryptography.exceptions import InvalidSignature

    try:
        files = table_from_json(document["files"])
        signature = base64.b64decode(str(document["signature"]), validate=True)
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise BundleSignatureError(f"{SIGNATURE_FILE} is malformed: {exc}") from exc
    try:
        public_key.verify(signature, signed_payload(SCHEME, str(document["key_id"]), files))
    except InvalidSignature as exc:
        raise BundleSignatureError(
            f"{SIGNATURE_FILE}: the signature does not match its file list (altered, or not made "
            f"by key {document['key_id']})"
        ) from exc
    return files

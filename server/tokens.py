"""Bearer tokens: high-entropy, stored only as hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: Bytes of randomness in a device token's secret part (256 bits).
SECRET_BYTES = 32
_SEPARATOR = "."


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as `dev-3f9a0c1d2b4e5f60`."""
    return f"{prefix}-{secrets.token_hex(8)}"


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token; enough for 256-bit random secrets, which need no slow KDF."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_device_token(device_id: str) -> str:
    """A device token `<device_id>.<secret>`: the id finds the stored hash, the secret proves it."""
    return f"{device_id}{_SEPARATOR}{secrets.token_urlsafe(SECRET_BYTES)}"


def device_id_of(token: str) -> str:
    """The device id a device token claims (empty when the token has no id part)."""
    head, sep, _ = token.partition(_SEPARATOR)
    return head if sep else ""


def matches(token: str, expected_hash: str) -> bool:
    """Whether `token` hashes to `expected_hash`, compared in constant time."""
    return hmac.compare_digest(hash_token(token), expected_hash)


def user_ref(app_id: str, user_id: str) -> str:
    """A user's name in logs: `user#` + 12 hex digits of SHA-256(app_id NUL user_id), never the id.

    It lets one follow a user across log lines; it is a pseudonym, not anonymous: whoever can guess
    user ids can hash them and compare.
    """
    digest = hashlib.sha256(f"{app_id}\0{user_id}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"user#{digest[:12]}"

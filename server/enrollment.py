"""Enrollment tickets: proof, from an app's own backend, that a device may register as one of its users.

Without them RegisterDevice trusts the `user_id` it is sent, so anyone who knows a user id could register
as that user and upload in their name. With an enrollment key per app (a JSON file `{app_id: secret}`
given to the server, each secret at least 32 characters), the app's backend, which has signed its user in,
mints a short-lived ticket for (app, user) with `mint_ticket`, the app passes it to the SDK's
`register(enrollment_ticket=...)`, and the server accepts the registration only with a valid ticket. Every
app then needs a key: an app missing from the file cannot register devices. A ticket is single-use: the
server records each accepted ticket (its SHA-256, until it expires) and refuses it a second time, so a
leaked or replayed ticket registers no second device; mint one per device sign-in (a phone and a tablet
each get their own).

Ticket: ``v1.<base64url JSON {"app", "user", "exp", "nonce"}>.<base64url HMAC-SHA256(secret, "v1." +
payload)>``.
This module needs the standard library only, so an app backend can vendor it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from pathlib import Path

VERSION = "v1"
MIN_SECRET_CHARS = 32
MAX_TICKET_CHARS = 2048
DEFAULT_TTL_S = 600
MAX_TTL_S = 3600  # the server refuses tickets valid for longer: a leaked one must not last


class TicketError(ValueError):
    """A ticket that does not prove what it must: `reason` says why (no secret material in it)."""

    def __init__(self, reason: str, wrong_subject: bool = False) -> None:
        super().__init__(reason)
        self.wrong_subject = wrong_subject  # a valid ticket, but for another app or user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{VERSION}.{payload}".encode(), hashlib.sha256).digest())


def mint_ticket(
    secret: str, app_id: str, user_id: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None
) -> str:
    """A ticket letting devices register as `user_id` of `app_id`, valid for `ttl_s` seconds."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"secret: needs at least {MIN_SECRET_CHARS} characters")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s: must be in (0, {MAX_TTL_S}], got {ttl_s}")
    expires = int((time.time() if now is None else now) + ttl_s)
    # a nonce: two tickets for one user minted in the same second must differ (each is single-use)
    claims = {"app": app_id, "user": user_id, "exp": expires, "nonce": secrets.token_urlsafe(9)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{VERSION}.{payload}.{_signature(secret, payload)}"


def check_ticket(
    secret: str, ticket: str, app_id: str, user_id: str, now: float | None = None
) -> int:
    """Raise `TicketError` unless `ticket` is a valid, unexpired ticket for exactly (app_id, user_id);
    returns its expiry (Unix seconds)."""
    if not ticket:
        raise TicketError(f"enrollment_ticket: app {app_id!r} requires one from its backend")
    parts = ticket.split(".")
    if (
        len(ticket) > MAX_TICKET_CHARS
        or not ticket.isascii()
        or len(parts) != 3
        or parts[0] != VERSION
    ):
        raise TicketError("enrollment_ticket: malformed")
    payload, signature = parts[1], parts[2]
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise TicketError("enrollment_ticket: bad signature")
    try:
        claims = json.loads(_unb64(payload))
        subject, expires = (str(claims["app"]), str(claims["user"])), claims["exp"]
    except (ValueError, KeyError, TypeError) as e:
        raise TicketError("enrollment_ticket: malformed") from e
    # an integer number of seconds: NaN (never expired by any comparison), strings and booleans are not
    if type(expires) is not int:
        raise TicketError("enrollment_ticket: exp must be an integer Unix time")
    at = time.time() if now is None else now
    if at >= expires:
        raise TicketError("enrollment_ticket: expired")
    if expires - at > MAX_TTL_S:
        raise TicketError(
            f"enrollment_ticket: valid for more than {MAX_TTL_S} s; mint short-lived tickets"
        )
    if subject != (app_id, user_id):
        raise TicketError("enrollment_ticket: issued for another app or user", wrong_subject=True)
    return expires


def load_keys(path: Path) -> dict[str, str]:
    """Read `{app_id: secret}` from a JSON file readable by its owner only (ValueError otherwise)."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path}: enrollment keys must be private (chmod 600)")
    try:
        keys = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from e
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{path}: expected a JSON object of app_id -> secret strings")
    short = sorted(app for app, secret in keys.items() if len(secret) < MIN_SECRET_CHARS)
    if short:
        raise ValueError(
            f"{path}: secrets of {short} are shorter than {MIN_SECRET_CHARS} characters"
        )
    return keys

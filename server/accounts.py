"""Devices, tokens and consent: who is calling, and what their users agreed to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from autohas_edge.server.domain import Consent, Device, Task, now
from autohas_edge.server.enrollment import TicketError, check_ticket
from autohas_edge.server.errors import NotFound, PermissionDenied, Unauthenticated
from autohas_edge.server.store import Store
from autohas_edge.server.tokens import (
    device_id_of,
    hash_token,
    matches,
    new_device_token,
    new_id,
    user_ref,
)
from autohas_edge.server.validate import check_id, check_text

log = logging.getLogger(__name__)
MAX_TOKEN_CHARS = 512
# Compared against when a token names no device, so an unknown id costs the same time as a wrong secret.
_NO_DEVICE_HASH = hash_token("no device")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a device, or the operator when `device` is None."""

    device: Device | None = None

    @property
    def is_operator(self) -> bool:
        """Whether the caller holds the operator token."""
        return self.device is None

    def can_read(self, task: Task) -> bool:
        """Whether the caller may read this task and its models (the operator may read all)."""
        return self.device is None or self.device.app_id in task.app_ids

    def describe(self) -> str:
        """A short name for messages."""
        if self.device is None:
            return "operator"
        return f"device {self.device.device_id} of app {self.device.app_id!r}"


OPERATOR = Principal()

RevokeResult = tuple[Consent | None, int]
#: `hook(app_id, user_id, purpose, commit)` revokes by calling `commit(at)` and returns its result; the
#: job manager's hook also purges the user's rows from job snapshots (see `server.jobs.retention`).
RevokeHook = Callable[[str, str, str, Callable[[float], RevokeResult]], RevokeResult]


def _revoke_now(
    app_id: str, user_id: str, purpose: str, commit: Callable[[float], RevokeResult]
) -> RevokeResult:
    return commit(now())


class Accounts:
    """Registers devices, authenticates tokens, and records consent grants and revocations."""

    def __init__(
        self,
        store: Store,
        operator_token: str,
        revoke_hook: RevokeHook = _revoke_now,
        enrollment_keys: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._operator_hash = hash_token(operator_token)  # the plain token is not kept
        self._revoke_hook = revoke_hook
        self._enrollment_keys = None if enrollment_keys is None else dict(enrollment_keys)

    @property
    def open_registration(self) -> bool:
        """Whether any caller may register a device for any user id (no enrollment keys configured)."""
        return self._enrollment_keys is None

    def register_device(
        self, app_id: str, user_id: str, name: str, ticket: str = ""
    ) -> tuple[Device, str]:
        """Register a device for an app's user; returns it and its token (shown once, stored hashed).

        With enrollment keys configured, `ticket` must be a valid enrollment ticket for exactly this app
        and user (see `server.enrollment`).
        """
        check_id("app_id", app_id)
        check_id("user_id", user_id)
        check_text("device_name", name)
        self._check_enrollment(app_id, user_id, ticket)
        device_id = new_id("dev")
        token = new_device_token(device_id)
        device = Device(device_id, app_id, user_id, name, hash_token(token), now())
        self._store.add_device(device)
        log.info(
            "registered device %s of app %s for %s (%s)",
            device_id,
            app_id,
            user_ref(app_id, user_id),
            "open registration" if self.open_registration else "enrollment ticket",
        )
        return device, token

    def _check_enrollment(self, app_id: str, user_id: str, ticket: str) -> None:
        if self._enrollment_keys is None:
            return
        secret = self._enrollment_keys.get(app_id)
        if secret is None:
            raise PermissionDenied(f"app_id: {app_id!r} has no enrollment key on this server")
        try:
            expires = check_ticket(secret, ticket, app_id, user_id)
        except TicketError as e:
            raise (PermissionDenied if e.wrong_subject else Unauthenticated)(str(e)) from e
        if not self._store.use_ticket(hash_token(ticket), expires, now()):
            raise Unauthenticated(
                "enrollment_ticket: already used (a ticket registers one device; mint another)"
            )

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token belongs to; Unauthenticated if it belongs to no one."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("invalid token")
        if matches(token, self._operator_hash):
            return OPERATOR
        device_id = device_id_of(token)
        device = self._store.get_device(device_id) if device_id else None
        if not matches(token, device.token_hash if device else _NO_DEVICE_HASH) or device is None:
            raise Unauthenticated("invalid token")
        if device.revoked_at is not None:
            raise Unauthenticated("invalid token (revoked)")
        return Principal(device)

    def revoke_device(self, principal: Principal, device_id: str) -> Device:
        """Revoke a device's token: a device its own (`device_id` empty or its id), the operator any.

        Another device's id answers as an unknown one. The device's examples and consents stay (revoke
        consent to delete examples); its token authenticates no more.
        """
        own = principal.device
        if own is None:
            check_id("device_id", device_id)
        elif device_id in ("", own.device_id):
            device_id = own.device_id
        else:
            device_id = ""  # another device: answered as an unknown one
        device = self._store.revoke_device(device_id, now()) if device_id else None
        if device is None:
            raise NotFound("device_id: no such device")
        by = "the device itself" if own else "the operator"
        log.info("revoked the token of device %s (by %s)", device_id, by)
        return device

    def grant_consent(self, device: Device, purpose: str, consent_text_version: str) -> Consent:
        """Record the device's user's consent for a purpose (idempotent for the same text version)."""
        check_id("purpose", purpose)
        check_id("consent_text_version", consent_text_version)
        consent = self._store.grant_consent(
            Consent(device.app_id, device.user_id, purpose, consent_text_version, now())
        )
        log.info(
            "consent granted: %s of app %s, purpose %s, text %s",
            user_ref(device.app_id, device.user_id),
            device.app_id,
            purpose,
            consent.consent_text_version,
        )
        return consent

    def revoke_consent(self, device: Device, purpose: str) -> tuple[Consent, int]:
        """Revoke the user's consent for a purpose and delete their examples for it at once (from the store,
        and through the hook from job snapshots)."""
        check_id("purpose", purpose)
        app_id, user_id = device.app_id, device.user_id

        def commit(at: float) -> RevokeResult:
            return self._store.revoke_consent(app_id, user_id, purpose, at)

        consent, deleted = self._revoke_hook(app_id, user_id, purpose, commit)
        if consent is None:
            raise NotFound(f"purpose: user {device.user_id!r} never consented to {purpose!r}")
        log.info(
            "consent revoked: %s of app %s, purpose %s; %d examples deleted",
            user_ref(app_id, user_id),
            app_id,
            purpose,
            deleted,
        )
        return consent, deleted

    def list_consents(self, device: Device) -> list[Consent]:
        """The device's user's consents, newest first."""
        return self._store.list_consents(device.app_id, device.user_id)

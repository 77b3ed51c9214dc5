"""Cross-cutting concerns of every RPC, in two interceptors: who is calling, and errors -> status codes.

An interceptor runs on gRPC's single polling thread, so both only pick a policy there and wrap the
handler; the token lookup and the error mapping run inside the wrapped handler, on a worker thread.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.accounts import Accounts, Principal
from autohas_edge.server.api.throttle import AuthThrottle, RateLimit, peer_address, retry_after
from autohas_edge.server.domain import Device
from autohas_edge.server.errors import (
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
)
from autohas_edge.server.store.base import StorageFull, is_full_disk

log = logging.getLogger(__name__)
Behavior = Callable[[Any, Any], Any]
Around = Callable[[Behavior, Any, Any], Any]


class Access(enum.Enum):
    """Who may call an RPC."""

    PUBLIC = "no token"
    DEVICE = "a device token"
    READER = "a device or the operator token"
    OPERATOR = "the operator token"


_PUBLIC = {"DeviceService.RegisterDevice"}
_READER = {
    "DeviceService.RevokeDevice",
    "DeviceService.GetTask",
    "DeviceService.ListModels",
    "DeviceService.GetModelManifest",
    "DeviceService.DownloadModel",
}


def access_table() -> dict[str, Access]:
    """Full method name -> Access for every RPC of the API; anything not listed above is the strictest."""
    table = {}
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            short = f"{service.name}.{method.name}"
            if short in _PUBLIC:
                access = Access.PUBLIC
            elif short in _READER:
                access = Access.READER
            else:
                access = Access.DEVICE if service.name == "DeviceService" else Access.OPERATOR
            table[f"/{service.full_name}/{method.name}"] = access
    return table


class AuthContext:
    """A servicer context that also carries the authenticated `principal`."""

    def __init__(self, context: grpc.ServicerContext, principal: Principal) -> None:
        self._context = context
        self.principal = principal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def principal_of(context: grpc.ServicerContext) -> Principal:
    """The caller, as the auth interceptor established it."""
    principal = getattr(context, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthenticated("no authenticated caller (is the auth interceptor installed?)")
    return principal


def device_of(context: grpc.ServicerContext) -> Device:
    """The calling device (for device-only RPCs)."""
    device = principal_of(context).device
    if device is None:
        raise PermissionDenied("this RPC needs a device token")
    return device


def bearer_token(metadata: Any) -> str:
    """The token of the `authorization: Bearer <token>` metadata entry; Unauthenticated if absent."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
    scheme, _, token = str(values[0]).partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed authorization metadata (expected one `Bearer <token>`)")
    return token.strip()


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    around: Around,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behavior called through `around(behavior, request, context)`.

    `request_deserializer` replaces the handler's own when given.
    """
    behavior: Behavior | None
    factory: Callable[..., grpc.RpcMethodHandler[Any, Any]]
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    assert behavior is not None, "a handler has the behavior of its streaming kind"
    return factory(
        lambda request, context: around(behavior, request, context),
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks each API call's token against its method's `Access` and hands servicers the principal.

    With a `throttle`, an address that keeps failing to authenticate is locked out (see
    `server.api.throttle`); with `registrations`, each address may register only so many devices a
    minute.
    """

    def __init__(
        self,
        accounts: Accounts,
        throttle: AuthThrottle | None = None,
        registrations: RateLimit | None = None,
    ) -> None:
        self._accounts = accounts
        self._table = access_table()
        self._throttle, self._registrations = throttle, registrations

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        access = self._table.get(details.method)
        if handler is None or access is None:
            return handler  # health and reflection need no token
        method = details.method.rsplit("/", 1)[-1]
        if access is Access.PUBLIC:
            return handler if self._registrations is None else self._limited(handler, method)

        def around(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._authenticate(context)
            if (access is Access.OPERATOR and not principal.is_operator) or (
                access is Access.DEVICE and principal.is_operator
            ):
                who = principal.describe()
                raise PermissionDenied(f"{method} needs {access.value}; the caller is the {who}")
            return behavior(request, AuthContext(context, principal))

        return wrap_handler(handler, around)

    def _authenticate(self, context: grpc.ServicerContext) -> Principal:
        """The caller's principal; an address locked out for failing too often is refused first."""
        if self._throttle is None:
            return self._accounts.authenticate(bearer_token(context.invocation_metadata()))
        address = peer_address(context.peer())
        locked = self._throttle.locked_for(address)
        if locked:
            raise ResourceExhausted(
                f"authorization: too many failed authentications from {address}; "
                f"{retry_after(locked)}"
            )
        try:
            principal = self._accounts.authenticate(bearer_token(context.invocation_metadata()))
        except Unauthenticated:
            self._throttle.failed(address)
            raise
        self._throttle.succeeded(address)
        return principal

    def _limited(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """A public handler counted against the per-address rate limit."""
        assert self._registrations is not None
        limit = self._registrations

        def around(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
            address = peer_address(context.peer())
            wait = limit.try_acquire(address)
            if wait:
                raise ResourceExhausted(
                    f"{method}: more than {limit.limit} calls a minute from {address}; "
                    f"{retry_after(wait)}"
                )
            return behavior(request, context)

        return wrap_handler(handler, around)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps `ServerError`s to their status codes and hides unexpected exceptions behind INTERNAL."""

    def __init__(self) -> None:
        self._methods = set(access_table())

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None or details.method not in self._methods:
            return handler

        def around(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
            if handler.response_streaming:
                return _guard_stream(behavior, request, context)
            try:
                return behavior(request, context)
            except Exception as e:
                _abort(context, e)

        return wrap_handler(handler, around)


def _guard_stream(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
    try:
        yield from behavior(request, context)
    except Exception as e:
        _abort(context, e)


def _abort(context: grpc.ServicerContext, error: Exception) -> None:
    """Fail the call with the error's status; re-raises when the call already has one (abort, cancel)."""
    if isinstance(error, ServerError):
        context.abort(getattr(grpc.StatusCode, error.code), error.message)
    if is_full_disk(
        error
    ):  # a file write the core did not expect to fail: still the caller's answer
        log.warning("a write failed for lack of room: %s", error)
        full = StorageFull("the request's data", str(error))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, full.message)
    # ServicerContext.code() exists since grpc 1.38 but is missing from types-grpcio
    if context.code() is not None or not context.is_active():  # type: ignore[attr-defined]
        raise error
    log.error("unexpected error in an RPC", exc_info=error)
    context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the server)")

"""Transport guards: malformed request bytes, and streams that could hold the RPC threads forever.

- `MessageInterceptor`: request bytes that do not parse as the method's message (truncated, random,
  nested deeper than protobuf's recursion limit, invalid UTF-8 in a string) are INVALID_ARGUMENT naming
  the message type. gRPC's own answer would be INTERNAL, which reads as a server bug.
- `StreamInterceptor`: every RPC runs on one of `rpc_threads` threads, and a stream holds its thread until
  it ends, so peers that open streams and then stall could take every thread and hang the server (health
  checks included). At most `open_streams` streams may wait on their peers at once, which keeps threads
  free for unary calls (a stream that would be one more gets RESOURCE_EXHAUSTED, retryable); and a stream
  whose peer sends nothing (upload) or reads nothing (download, watch) for `idle_timeout` seconds is
  cancelled. Every streaming method is guarded, the library services' too (server reflection,
  Health.Watch): those hold their slot for their whole life (they wait on their peer or on a rare
  event) and are cancelled after `idle_timeout` seconds without a message either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from autohas_edge.server.api.interceptors import Behavior, access_table, wrap_handler
from autohas_edge.server.errors import InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)


class Malformed:
    """Stands in for a request message whose bytes did not parse."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.detail = (
            f"not a valid {type_name} message ({type(error).__name__}: {str(error)[:200]})"
        )


def lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A request deserializer that returns `Malformed` instead of raising."""
    message_class = getattr(deserialize, "__self__", None)
    type_name = getattr(getattr(message_class, "DESCRIPTOR", None), "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # DecodeError, and whatever else a hostile payload provokes
            return Malformed(type_name, e)

    return parse


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, Malformed):
            raise InvalidArgument("message", request.detail)
        yield request


class MessageInterceptor(grpc.ServerInterceptor):
    """Refuses request bytes that are not the method's message with INVALID_ARGUMENT (install innermost)."""

    def __init__(self) -> None:
        self._methods = set(access_table())

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if (
            handler is None
            or handler.request_deserializer is None
            or details.method not in self._methods
        ):
            return handler

        def around(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
            if handler.request_streaming:
                return behavior(_checked_stream(request), context)
            if isinstance(request, Malformed):
                raise InvalidArgument("request", request.detail)
            return behavior(request, context)

        return wrap_handler(handler, around, lenient(handler.request_deserializer))


class _Watched:
    """One open stream: since when it waits on its peer (None while the server itself is busy)."""

    def __init__(self, context: grpc.ServicerContext, method: str) -> None:
        self.context, self.method = context, method
        self.waiting_since: float | None = None
        self.cancelled = False
        principal = getattr(context, "principal", None)  # set by the auth interceptor
        device = getattr(principal, "device", None)
        self.owner: str | None = None if device is None else device.device_id


class IdleWatchdog:
    """Cancels streams whose peer made no progress for `timeout` seconds (one thread, while any is open)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._period = min(1.0, timeout / 4)
        self._lock = threading.Lock()
        self._watched: set[_Watched] = set()
        self._thread: threading.Thread | None = None
        self.cancelled = 0  # streams cancelled so far (for tests and logs)

    def watch(self, context: grpc.ServicerContext, method: str) -> _Watched:
        """Start watching a stream; call `unwatch` when it ends."""
        entry = _Watched(context, method)
        with self._lock:
            self._watched.add(entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="stream-watchdog", daemon=True
                )
                self._thread.start()
        return entry

    def unwatch(self, entry: _Watched) -> None:
        """Stop watching a stream that ended."""
        with self._lock:
            self._watched.discard(entry)

    def _run(self) -> None:
        while True:
            time.sleep(self._period)
            with self._lock:
                if not self._watched:
                    self._thread = None  # the next watch() starts a new thread
                    return
                stalled = self._stalled(time.monotonic())
            for entry in stalled:
                log.warning(
                    "cancelling %s: its peer made no progress for %.0f s",
                    entry.method,
                    self._timeout,
                )
                entry.context.cancel()

    def _stalled(self, now: float) -> list[_Watched]:
        stalled = [
            e
            for e in self._watched
            if not e.cancelled
            and e.waiting_since is not None
            and now - e.waiting_since > self._timeout
        ]
        for entry in stalled:
            entry.cancelled = True
        self.cancelled += len(stalled)
        return stalled


class _Slots:
    """How many streams may wait on their peer at once, and how many of them one device may hold;
    each stream holds at most one slot."""

    def __init__(self, limit: int, per_device: int | None = None) -> None:
        self.limit = limit
        self.per_device = limit if per_device is None else per_device
        self.used = 0
        self._holders: set[_Watched] = set()
        self._by_device: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, entry: _Watched) -> str:
        """Give `entry` a slot: "" when it has one (or had), else why not ("server" or "device")."""
        with self._lock:
            if entry in self._holders:
                return ""
            if self.used >= self.limit:
                return "server"
            owner = entry.owner
            if owner is not None and self._by_device.get(owner, 0) >= self.per_device:
                return "device"
            self._holders.add(entry)
            self.used += 1
            if owner is not None:
                self._by_device[owner] = self._by_device.get(owner, 0) + 1
            return ""

    def give(self, entry: _Watched) -> None:
        """Return `entry`'s slot, if it holds one."""
        with self._lock:
            if entry in self._holders:
                self._holders.discard(entry)
                self.used -= 1
                owner = entry.owner
                if owner is not None:
                    self._by_device[owner] -= 1
                    if not self._by_device[owner]:
                        del self._by_device[owner]


class StreamInterceptor(grpc.ServerInterceptor):
    """Caps the streams waiting on their peers and cancels stalled ones (install after auth).

    A stream holds a slot only while it waits on its peer: for the next request message of an upload, or
    for the peer to take a sent message of a download or watch. Time spent on the server's own work (a
    commit, a search's progress) needs no slot, so a busy server never refuses streams; stalled peers
    can hold at most `open_streams` threads, and each for at most `idle_timeout` seconds.
    """

    def __init__(
        self, open_streams: int, idle_timeout: float, per_device: int | None = None
    ) -> None:
        self.slots = _Slots(open_streams, per_device)
        self.watchdog = IdleWatchdog(idle_timeout)
        self._methods = set(access_table())

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        ours = method in self._methods

        def around(behavior: Behavior, request: Any, context: grpc.ServicerContext) -> Any:
            entry = self.watchdog.watch(context, method)
            if not context.add_callback(
                lambda: self._end(entry)
            ):  # runs once the RPC ends, however
                self._end(entry)
            if not ours:  # a library stream: a slot for its whole life (given back in `_end`)
                self._await_peer(entry)
            if handler.request_streaming:
                request = self._requests(request, entry, ours)
            if handler.response_streaming:
                return self._responses(behavior(request, context), entry, ours)
            return behavior(request, context)

        return wrap_handler(handler, around)

    def _end(self, entry: _Watched) -> None:
        self.slots.give(entry)
        self.watchdog.unwatch(entry)

    def _await_peer(self, entry: _Watched) -> None:
        """Take a slot before waiting on the peer; RESOURCE_EXHAUSTED when none is free."""
        refused = self.slots.take(entry)
        if refused:
            name = entry.method.rsplit("/", 1)[-1]
            message = (
                f"{name}: {self.slots.limit} streams are waiting on their peers, the "
                "server's limit; retry later"
                if refused == "server"
                else f"{name}: this device already has {self.slots.per_device} streams waiting "
                "on it, its share of the server's; finish or cancel one first"
            )
            if entry.method in self._methods:
                raise ResourceExhausted(message)
            entry.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        entry.waiting_since = time.monotonic()

    def _progress(self, entry: _Watched, ours: bool) -> None:
        """A message went by: our streams give their slot back; a library stream restarts its
        idle clock and keeps its slot."""
        if ours:
            self._peer_done(entry)
        else:
            entry.waiting_since = time.monotonic()

    def _peer_done(self, entry: _Watched) -> None:
        entry.waiting_since = None
        self.slots.give(entry)

    def _requests(self, requests: Iterator[Any], entry: _Watched, ours: bool) -> Iterator[Any]:
        """The request stream, holding a slot while it waits for the peer's next message."""
        while True:
            if ours:
                self._await_peer(entry)
            try:
                request = next(requests)
            except StopIteration:
                return
            finally:
                self._progress(entry, ours)
            yield request

    def _responses(self, responses: Iterator[Any], entry: _Watched, ours: bool) -> Iterator[Any]:
        """The response stream, holding a slot while gRPC sends each message (the peer must read it)."""
        for response in responses:
            if ours:
                self._await_peer(entry)
            try:
                yield response
            finally:
                self._progress(entry, ours)

"""Per-address limits on what costs nothing to try: registering devices and guessing tokens.

- `RateLimit`: at most `limit` events per address in any `window_s` seconds (RegisterDevice: a peer
  cannot mint thousands of devices, or of rows in the store, in seconds).
- `AuthThrottle`: `max_failures` failed authentications from one address within `window_s` lock the
  address out for `lockout_s`, doubled at each further lockout (at most `max_lockout_s`) until it
  authenticates again; while locked out every call that needs a token is refused before the token is
  checked, so guessing stops there. Each lockout is logged (with the peer's address, the attacker's).

Both keep at most `max_peers` addresses (the least recently seen are forgotten first), so a flood of
addresses cannot grow the server's memory without bound. An address is the peer's IP without its port.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
MAX_PEERS = 100_000


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string (`ipv4:1.2.3.4:5678` -> `1.2.3.4`, `ipv6:[::1]:5` -> `::1`)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer  # unix sockets and the like: the whole string


@dataclass
class _Peer:
    events: deque[float] = field(default_factory=deque)
    strikes: int = 0  # lockouts since the address last authenticated
    locked_until: float = 0.0


class _Peers:
    """The recent events of each address, bounded in number (least recently seen forgotten first)."""

    def __init__(self, window_s: float, max_peers: int) -> None:
        self.window_s = window_s
        self._max = max_peers
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, address: str, now: float) -> _Peer:
        """The address's record with events older than the window dropped; holds `lock`."""
        peer = self._peers.pop(address, None) or _Peer()
        self._peers[address] = peer
        if len(self._peers) > self._max:
            self._peers.popitem(last=False)
        while peer.events and peer.events[0] <= now - self.window_s:
            peer.events.popleft()
        return peer

    def forget(self, address: str) -> None:
        """Drop an address's record; holds `lock`."""
        self._peers.pop(address, None)


class RateLimit:
    """At most `limit` events per address in any `window_s` seconds; the first refusal is logged."""

    def __init__(
        self, name: str, limit: int, window_s: float = 60.0, max_peers: int = MAX_PEERS
    ) -> None:
        self.name, self.limit = name, limit
        self._peers = _Peers(window_s, max_peers)

    def try_acquire(self, address: str) -> float:
        """Count an event: 0.0 when allowed, else the seconds until the address may try again."""
        now = time.monotonic()
        with self._peers.lock:
            peer = self._peers.get(address, now)
            if len(peer.events) < self.limit:
                peer.events.append(now)
                peer.strikes = 0
                return 0.0
            wait = peer.events[0] + self._peers.window_s - now
            first, peer.strikes = peer.strikes == 0, 1
        if first:
            log.warning(
                "%s: %s went over %d calls in %.0f s; refusing it for now",
                self.name,
                address,
                self.limit,
                self._peers.window_s,
            )
        return max(wait, 0.001)


class AuthThrottle:
    """Locks out an address after repeated failed authentications, with a doubling lockout."""

    def __init__(
        self,
        max_failures: int,
        window_s: float = 60.0,
        lockout_s: float = 30.0,
        max_lockout_s: float = 3600.0,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self.max_failures = max_failures
        self._lockout_s, self._max_lockout_s = lockout_s, max_lockout_s
        self._peers = _Peers(window_s, max_peers)

    def locked_for(self, address: str) -> float:
        """Seconds the address stays locked out (0.0 when it may try)."""
        now = time.monotonic()
        with self._peers.lock:
            return max(self._peers.get(address, now).locked_until - now, 0.0)

    def failed(self, address: str) -> float:
        """Count a failed authentication; returns the lockout it started (0.0 when none)."""
        now = time.monotonic()
        with self._peers.lock:
            peer = self._peers.get(address, now)
            peer.events.append(now)
            if len(peer.events) < self.max_failures:
                return 0.0
            lockout = float(min(self._lockout_s * 2**peer.strikes, self._max_lockout_s))
            peer.strikes += 1
            peer.locked_until = now + lockout
            peer.events.clear()
        log.warning(
            "auth: %d failed authentications from %s within %.0f s; locked out for %.0f s",
            self.max_failures,
            address,
            self._peers.window_s,
            lockout,
        )
        return lockout

    def succeeded(self, address: str) -> None:
        """A valid token from the address: its failures and lockout history are forgotten."""
        with self._peers.lock:
            self._peers.forget(address)


def retry_after(seconds: float) -> str:
    """`retry in N s` for messages (rounded up)."""
    return f"retry in {math.ceil(seconds)} s"

"""The server's configuration: one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_OPERATOR_TOKEN_CHARS = 16
#: bits a configured operator token must carry by `token_bits` (`secrets.token_urlsafe(32)`: ~200)
MIN_OPERATOR_TOKEN_BITS = 64
MIB = 2**20
GIB = 2**30
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def token_bits(token: str) -> float:
    """An upper estimate of a token's entropy: its length times the Shannon entropy of its characters.

    `'a' * 16` has 0 bits, a random 16-character hex string ~42 (32 of them: ~120),
    `secrets.token_urlsafe(32)` ~200;
    a token picked by a person scores high only if it is long and varied (a passphrase).
    """
    counts = Counter(token)
    n = len(token)
    return max(0.0, -sum(c * math.log2(c / n) for c in counts.values()))


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass(frozen=True)
class ServerConfig:
    """Everything `make_server` needs; paths are resolved, limits checked, in `__post_init__`."""

    data_dir: Path
    operator_token: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # when set, clients must present a certificate it signed
    max_message_bytes: int = 16 * MIB
    max_batch_examples: int = 65536
    download_chunk_bytes: int = MIB
    rpc_threads: int = 32
    max_concurrent_rpcs: int = 256
    max_running_jobs: int = 1
    max_watch_streams: int = (
        8  # each WatchJob holds an RPC thread; more are refused, GetJob still answers
    )
    # Streams (UploadExamples, DownloadModel, WatchJob) that may wait on their peers at once, each wait
    # holding an RPC thread; 0 = all threads but a quarter (at least 2), kept for unary calls, so stalled
    # peers can never take every thread. One more gets RESOURCE_EXHAUSTED (retryable).
    max_streams: int = 0
    stream_idle_timeout_s: float = (
        60.0  # a stream whose peer sends or reads nothing this long is cancelled
    )
    # gRPC server reflection (grpcurl, Postman): off unless asked for; it tells anyone who can reach
    # the port every method and message of the service
    reflection: bool = False
    search_device: str = "auto"
    # Worker processes per search (torchrun ranks: gloo on CPU, one GPU each with CUDA); each does 1/N of
    # every step and they average gradients. More than one needs that many GPUs with CUDA.
    search_workers: int = 1
    # JSON {app_id: secret}, chmod 600: RegisterDevice then needs an enrollment ticket from the app's backend
    # (server/enrollment.py). None: open registration, for development (anyone knowing a user id can
    # register as that user).
    enrollment_keys: Path | None = None
    # Ed25519 private key PEM (`autohas keygen`, chmod 600): every exported bundle is signed with it
    # (signature.json); devices pin its public key and refuse unsigned bundles. None: bundles unsigned.
    signing_key: Path | None = None
    # the module implementing `run_job` / `export_bundle` (see server/engine.py)
    engine: str = "autohas_edge.server.engine"
    store: str = "sqlite"
    # Where jobs run: "local" (a process on this machine) or "ray" (a Ray cluster, see
    # server/jobs/ray_executor.py). ray_address "" = Ray's own default ($RAY_ADDRESS, else a cluster
    # started on this machine); ray_gpus_per_worker -1 = 1 when search_device is "cuda", else 0;
    # ray_scratch_dir: where nodes keep a running job's snapshot ("" = their temp dir).
    executor: str = "local"
    ray_address: str = ""
    ray_cpus_per_worker: float = 1.0
    ray_gpus_per_worker: float = -1.0
    ray_scratch_dir: str = ""
    # Stored example bytes (features + labels) allowed per device, per user and per app; an upload
    # that would go over answers RESOURCE_EXHAUSTED naming the quota. 0 = no limit.
    device_quota_bytes: int = 64 * MIB
    user_quota_bytes: int = 256 * MIB
    app_quota_bytes: int = 8 * GIB
    # RegisterDevice calls allowed per client address a minute (0 = no limit)
    registrations_per_minute: int = 120
    # Failed authentications from one address within a minute that lock it out for auth_lockout_s,
    # doubled at each further lockout up to an hour (0 = never lock out)
    auth_failures_per_minute: int = 20
    auth_lockout_s: float = 30.0
    # Of the `open_streams` stream slots, how many one device may hold (0 = a quarter, at least 1)
    max_streams_per_device: int = 0
    # A job needs examples of at least this many distinct consented users, unless its task sets its
    # own `min_users` (1 keeps single-user jobs possible; production: 5 or more, see the README)
    min_cohort_users: int = 1
    # Serve on a non-loopback address without TLS or without enrollment keys (development only)
    insecure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name in ("tls_cert", "tls_key", "tls_client_ca", "enrollment_keys", "signing_key"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if len(self.operator_token) < MIN_OPERATOR_TOKEN_CHARS:
            raise ValueError(
                f"operator_token: needs at least {MIN_OPERATOR_TOKEN_CHARS} characters"
            )
        if token_bits(self.operator_token) < MIN_OPERATOR_TOKEN_BITS:
            raise ValueError(
                f"operator_token: too predictable ({token_bits(self.operator_token):.0f} bits by "
                f"its character frequencies, at least {MIN_OPERATOR_TOKEN_BITS} needed); make one "
                "with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: needs tls_cert and tls_key")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not in [0, 65535]")
        for name in (
            "max_message_bytes",
            "max_batch_examples",
            "download_chunk_bytes",
            "rpc_threads",
            "max_concurrent_rpcs",
            "max_running_jobs",
            "max_watch_streams",
            "search_workers",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        if self.max_watch_streams >= self.rpc_threads:
            raise ValueError("max_watch_streams: must leave RPC threads free (below rpc_threads)")
        if not 0 <= self.max_streams < self.rpc_threads:
            raise ValueError(
                "max_streams: must leave RPC threads free (0 <= max_streams < rpc_threads)"
            )
        if not (math.isfinite(self.stream_idle_timeout_s) and self.stream_idle_timeout_s > 0):
            raise ValueError("stream_idle_timeout_s: must be a positive number of seconds")
        if self.download_chunk_bytes > self.max_message_bytes // 2:
            raise ValueError("download_chunk_bytes: must fit twice into max_message_bytes")
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor: {self.executor!r} is not local or ray")
        if not (math.isfinite(self.ray_cpus_per_worker) and self.ray_cpus_per_worker > 0):
            raise ValueError("ray_cpus_per_worker: must be a positive number")
        if not (math.isfinite(self.ray_gpus_per_worker) and self.ray_gpus_per_worker >= -1):
            raise ValueError("ray_gpus_per_worker: must be 0 or more (or -1: 1 with CUDA, else 0)")
        if self.search_device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"search_device: {self.search_device!r} is not auto, cpu or cuda")
        for name in (
            "device_quota_bytes",
            "user_quota_bytes",
            "app_quota_bytes",
            "registrations_per_minute",
            "auth_failures_per_minute",
            "max_streams_per_device",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be 0 (no limit) or more")
        if self.min_cohort_users < 1:
            raise ValueError("min_cohort_users: must be at least 1")
        if not (math.isfinite(self.auth_lockout_s) and self.auth_lockout_s > 0):
            raise ValueError("auth_lockout_s: must be a positive number of seconds")
        self._check_exposure()

    def _check_exposure(self) -> None:
        """Refuse to serve beyond this machine without TLS and enrollment keys, unless `insecure`."""
        if self.insecure or is_loopback(self.host):
            return
        missing = [
            what
            for what, absent in (
                ("TLS (--tls-cert/--tls-key)", not self.tls),
                ("enrollment keys (--enrollment-keys)", self.enrollment_keys is None),
            )
            if absent
        ]
        if missing:
            raise ValueError(
                f"host: {self.host} is reachable from other machines, so it needs "
                f"{' and '.join(missing)}; pass --insecure to serve without them anyway"
            )

    @property
    def open_streams(self) -> int:
        """How many streams may wait on their peers at once (see `max_streams`)."""
        return self.max_streams or max(1, self.rpc_threads - max(2, self.rpc_threads // 4))

    @property
    def streams_per_device(self) -> int:
        """How many stream slots one device may hold (see `max_streams_per_device`)."""
        return min(self.max_streams_per_device or max(1, self.open_streams // 4), self.open_streams)

    @property
    def tls(self) -> bool:
        """Whether the server listens with TLS."""
        return self.tls_cert is not None

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

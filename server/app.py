"""Assemble the server: store, core objects, job manager, servicers, interceptors, health, reflection.

`make_server(config)` builds everything but starts nothing; `ServerHandle.start()` starts the job
manager and the gRPC server, `ServerHandle.stop()` stops both and releases the data dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from autohas_edge.export.signing import load_private_key
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server import enrollment
from autohas_edge.server.accounts import Accounts
from autohas_edge.server.api.device import DeviceServicer
from autohas_edge.server.api.guards import MessageInterceptor, StreamInterceptor
from autohas_edge.server.api.interceptors import AuthInterceptor, ErrorInterceptor
from autohas_edge.server.api.operator import OperatorServicer
from autohas_edge.server.api.throttle import AuthThrottle, RateLimit
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.examples import Examples
from autohas_edge.server.jobs import JobManager
from autohas_edge.server.jobs.executor import make_executor
from autohas_edge.server.models import ModelRegistry
from autohas_edge.server.store import Quota, Store, open_store

log = logging.getLogger(__name__)
PRIVATE_DIRS = (
    "jobs",
    "models",
)  # made 0700 at start (run/ dirs, inside jobs/, by the job manager)
HEALTH_PERIOD_S = 2.0  # how often the health status is checked against what the server can do
SERVICE_NAMES = tuple(s.full_name for s in pb.DESCRIPTOR.services_by_name.values())


class DataDirInUse(RuntimeError):
    """Another server process holds the data dir."""


def _check_private(data_dir: Path) -> None:
    """Refuse a data dir that others may write to or that another user owns (e.g. `/tmp`, mode 1777):
    making it private would take it from its other users, and leaving it shared exposes people's data."""
    if not data_dir.exists():
        return
    st = data_dir.stat()
    shared = st.st_mode & (stat.S_IWOTH | stat.S_ISVTX) or st.st_uid != os.getuid()
    if shared:
        raise ValueError(
            f"data dir {data_dir} is a shared directory (mode {stat.S_IMODE(st.st_mode):o}, owner "
            f"uid {st.st_uid}); give a directory of the server's own, e.g. {data_dir / 'autohas'}"
        )


def _private_dirs(data_dir: Path) -> None:
    """The data dir's subdirectories that hold people's data or models, made mode 0700."""
    for name in PRIVATE_DIRS:
        path = data_dir / name
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # also when an older server made it 0755


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data dir for this process's lifetime (one server per data dir)."""
    _check_private(data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(
            data_dir, 0o700
        )  # people's data: also when the dir existed before (mkdir keeps its mode)
    except OSError as e:  # a file system without modes: say so, but serve
        log.warning("could not make the data dir %s private (mode 0700): %s", data_dir, e)
    handle = open(data_dir / "server.lock", "a+")  # noqa: SIM115 (held open until App.close)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise DataDirInUse(
            f"data dir {data_dir} is in use by another server (pid {owner})"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


@dataclass
class App:
    """The server's core objects, independent of gRPC."""

    config: ServerConfig
    store: Store
    accounts: Accounts
    examples: Examples
    jobs: JobManager
    models: ModelRegistry
    health: health.HealthServicer
    _lock: IO[str]
    _closed: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start the job manager (requeues jobs the last server left running) and the health check."""
        self.jobs.start()
        self.set_health(self.can_work())
        threading.Thread(target=self._check_health, name="health-check", daemon=True).start()

    def can_work(self) -> bool:
        """Whether the server can do its work: the store answers reads and the job scheduler runs.

        A full disk alone does not count: reads, downloads and the scheduler still work, and writes
        answer RESOURCE_EXHAUSTED with a message, so health stays SERVING.
        """
        try:
            self.store.get_task("")
        except Exception as e:
            log.error("health: the store cannot be read: %s", e)
            return False
        alive = self.jobs.scheduler_alive()
        if not alive:
            log.error("health: the job scheduler is not running")
        return alive

    def set_health(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the server and each of its services."""
        status = health_pb2.HealthCheckResponse.SERVING
        if not serving:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def _check_health(self) -> None:
        while not self._closed.wait(HEALTH_PERIOD_S):
            self.set_health(self.can_work())

    def close(self, grace: float = 5.0) -> None:
        """Stop the workers, close the store, release the data dir."""
        self._closed.set()
        self.health.enter_graceful_shutdown()
        self.jobs.close(grace)
        self.models.close()
        self.store.close()
        self._lock.close()


def _quota(config: ServerConfig) -> Quota:
    return Quota(config.device_quota_bytes, config.user_quota_bytes, config.app_quota_bytes)


def build_app(config: ServerConfig) -> App:
    """The core objects over `config.data_dir` (locked, so a second server on it fails fast)."""
    keys = None if config.enrollment_keys is None else enrollment.load_keys(config.enrollment_keys)
    if keys is None:
        log.warning(
            "open registration: no enrollment keys, so anyone knowing a user id can register as "
            "that user (give --enrollment-keys in production)"
        )
    signing_key = None if config.signing_key is None else load_private_key(config.signing_key)
    lock = _lock_data_dir(config.data_dir)
    try:
        _private_dirs(config.data_dir)
        store = open_store(config.store, config.data_dir)
    except BaseException:
        lock.close()
        raise
    try:
        executor = make_executor(config)  # with `ray`: connects to the cluster
    except BaseException:
        store.close()
        lock.close()
        raise
    jobs = JobManager(
        store,
        config.data_dir / "jobs",
        config.engine,
        config.search_device,
        config.max_running_jobs,
        config.max_watch_streams,
        config.search_workers,
        config.min_cohort_users,
        executor=executor,
    )
    models = ModelRegistry(
        store,
        config.data_dir / "models",
        config.engine,
        config.download_chunk_bytes,
        signing_key=signing_key,
    )
    return App(
        config,
        store,
        Accounts(store, config.operator_token, jobs.revoke, keys),
        Examples(store, config.max_batch_examples, _quota(config)),
        jobs,
        models,
        health.HealthServicer(),
        lock,
    )


class ServerHandle(NamedTuple):
    """What `make_server` returns: the unstarted gRPC server, the bound port, the app behind it and the
    stream guard (its open streams, and how many stalled ones it cancelled)."""

    server: grpc.Server
    port: int
    app: App
    streams: StreamInterceptor | None = None

    @property
    def address(self) -> str:
        """`host:port` to connect to."""
        host = self.app.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self) -> None:
        """Start the job manager, then serve."""
        self.app.start()
        self.server.start()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (in-flight calls get `grace` seconds), then stop the app."""
        self.app.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.app.close()


def _credentials(config: ServerConfig) -> grpc.ServerCredentials:
    assert config.tls_cert is not None and config.tls_key is not None
    pair = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
    ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def _bind(server: grpc.Server, config: ServerConfig) -> int:
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.port}"
    try:
        port = (
            server.add_secure_port(address, _credentials(config))
            if config.tls
            else server.add_insecure_port(address)
        )
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: {e}") from e
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def _add_services(server: grpc.Server, app: App) -> None:
    device = DeviceServicer(app.accounts, app.examples, app.models)
    operator = OperatorServicer(app.examples, app.jobs, app.models)
    pb_grpc.add_DeviceServiceServicer_to_server(device, server)
    pb_grpc.add_OperatorServiceServicer_to_server(operator, server)
    health_pb2_grpc.add_HealthServicer_to_server(app.health, server)
    app.set_health(True)
    if app.config.reflection:
        names = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)


def _throttles(config: ServerConfig) -> tuple[AuthThrottle | None, RateLimit | None]:
    """The failed-authentication lockout and the registration rate limit the config asks for."""
    throttle = (
        AuthThrottle(config.auth_failures_per_minute, lockout_s=config.auth_lockout_s)
        if config.auth_failures_per_minute
        else None
    )
    registrations = (
        RateLimit("RegisterDevice", config.registrations_per_minute)
        if config.registrations_per_minute
        else None
    )
    return throttle, registrations


def make_server(config: ServerConfig) -> ServerHandle:
    """Build the server for `config` and bind its port (0 = a free one); nothing is started yet."""
    app = build_app(config)
    streams = StreamInterceptor(
        config.open_streams, config.stream_idle_timeout_s, config.streams_per_device
    )
    try:
        # Outermost first: errors -> status codes; who is calling; stream limits; unparsable requests.
        server = grpc.server(
            ThreadPoolExecutor(max_workers=config.rpc_threads, thread_name_prefix="autohas-rpc"),
            interceptors=[
                ErrorInterceptor(),
                AuthInterceptor(app.accounts, *_throttles(config)),
                streams,
                MessageInterceptor(),
            ],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],  # a taken port is an error, not a shared listener
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        _add_services(server, app)
        port = _bind(server, config)
    except BaseException:
        app.close()
        raise
    return ServerHandle(server, port, app, streams)

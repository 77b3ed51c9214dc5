"""`autohas server`: run the personalization gRPC server until SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from autohas_edge.server.config import MIB, ServerConfig

TOKEN_ENV = "AUTOHAS_OPERATOR_TOKEN"
TOKEN_FILE = "operator_token"  # in the data dir, made on first start when no token is given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's command-line options."""
    parser.add_argument(
        "--data-dir", type=Path, default=Path("var"), help="SQLite store, jobs and models"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)"
    )
    parser.add_argument(
        "--port", type=int, default=50051, help="port; 0 picks a free one (printed)"
    )
    parser.add_argument(
        "--operator-token-file",
        type=Path,
        help=f"file holding the operator token (else ${TOKEN_ENV}, else one is made and "
        f"written to DATA_DIR/{TOKEN_FILE})",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="PEM certificate chain (with --tls-key: serve TLS)"
    )
    parser.add_argument("--tls-key", type=Path, help="PEM private key")
    parser.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA: require client certificates it signed"
    )
    parser.add_argument(
        "--max-message-mb", type=float, default=16.0, help="largest request message"
    )
    parser.add_argument(
        "--max-running-jobs", type=int, default=1, help="searches run at the same time"
    )
    parser.add_argument("--rpc-threads", type=int, default=32, help="threads serving calls")
    parser.add_argument(
        "--max-streams",
        type=int,
        default=0,
        help="streams waiting on their peers at once (0: all threads but a quarter)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="search device"
    )
    parser.add_argument(
        "--reflection",
        action="store_true",
        help="serve gRPC server reflection (for grpcurl and the like; off by default)",
    )
    parser.add_argument(
        "--enrollment-keys",
        type=Path,
        help="JSON {app_id: secret} (chmod 600): devices register only with a ticket from "
        "their app's backend (server/enrollment.py); without it registration is open",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        help="Ed25519 private key PEM (`autohas keygen`, chmod 600): sign every exported bundle; "
        "devices pin its public key and refuse unsigned bundles",
    )
    parser.add_argument(
        "--search-workers",
        type=int,
        default=1,
        help="worker processes per search under torchrun (one GPU each with CUDA)",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where search jobs run: worker processes here, or a Ray cluster (pip install "
        "'autohas-edge[ray]'; see the README)",
    )
    parser.add_argument(
        "--ray-address",
        default="",
        help="with --executor ray: the cluster (host:port on a cluster node, or ray://head:10001); "
        "default $RAY_ADDRESS, else a cluster started on this machine",
    )
    parser.add_argument(
        "--ray-cpus-per-worker", type=float, default=1.0, help="CPUs a search worker asks Ray for"
    )
    parser.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        default=-1.0,
        help="GPUs a search worker asks Ray for (default: 1 with --device cuda, else 0)",
    )
    parser.add_argument(
        "--ray-scratch-dir",
        default="",
        help="directory on each node for a running job's snapshot (default: the node's temp dir)",
    )
    parser.add_argument(
        "--engine",
        default="autohas_edge.server.engine",
        help=argparse.SUPPRESS,  # a test hook: the module adapting the engine (tests name a fake)
    )
    add_security_arguments(parser)


def add_security_arguments(parser: argparse.ArgumentParser) -> None:
    """Exposure, quotas and rate limits (defaults: `ServerConfig`'s)."""
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve on a non-loopback --host without TLS or enrollment keys (development only)",
    )
    for scope, default in (("device", 64), ("user", 256), ("app", 8192)):
        parser.add_argument(
            f"--{scope}-quota-mb",
            type=float,
            default=float(default),
            help=f"stored example MiB allowed per {scope} (0: no limit; default {default})",
        )
    parser.add_argument(
        "--min-cohort-users",
        type=int,
        default=1,
        help="distinct consented users a job needs unless its task sets min_users (production: 5+)",
    )
    parser.add_argument(
        "--registrations-per-minute",
        type=int,
        default=120,
        help="RegisterDevice calls allowed per client address a minute (0: no limit)",
    )
    parser.add_argument(
        "--auth-failures-per-minute",
        type=int,
        default=20,
        help="failed authentications from one address that lock it out (0: never)",
    )


def security_settings(args: argparse.Namespace) -> dict[str, object]:
    """The ServerConfig fields of `add_security_arguments`."""
    return {
        "insecure": args.insecure,
        "min_cohort_users": args.min_cohort_users,
        "device_quota_bytes": int(args.device_quota_mb * MIB),
        "user_quota_bytes": int(args.user_quota_mb * MIB),
        "app_quota_bytes": int(args.app_quota_mb * MIB),
        "registrations_per_minute": args.registrations_per_minute,
        "auth_failures_per_minute": args.auth_failures_per_minute,
    }


def operator_token(args: argparse.Namespace) -> tuple[str, str]:
    """The operator token and where it came from: the file, the environment, or a new one in the data dir."""
    if args.operator_token_file is not None:
        return args.operator_token_file.read_text().strip(), str(args.operator_token_file)
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    path = args.data_dir / TOKEN_FILE
    if not path.exists():
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), str(path)


def config_from_args(args: argparse.Namespace) -> tuple[ServerConfig, str]:
    """The ServerConfig the options describe, and where the operator token came from."""
    token, source = operator_token(args)
    config = ServerConfig(
        data_dir=args.data_dir,
        operator_token=token,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        max_message_bytes=int(args.max_message_mb * MIB),
        max_running_jobs=args.max_running_jobs,
        search_device=args.device,
        search_workers=args.search_workers,
        enrollment_keys=args.enrollment_keys,
        signing_key=args.signing_key,
        engine=args.engine,
        executor=args.executor,
        ray_address=args.ray_address,
        ray_cpus_per_worker=args.ray_cpus_per_worker,
        ray_gpus_per_worker=args.ray_gpus_per_worker,
        ray_scratch_dir=args.ray_scratch_dir,
        rpc_threads=args.rpc_threads,
        max_streams=args.max_streams,
        reflection=args.reflection,
        **security_settings(args),  # type: ignore[arg-type]
    )
    return config, source


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit code."""
    from autohas_edge.server.app import make_server

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config, source = config_from_args(args)
        handle = make_server(config)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"autohas server: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    faulthandler.register(
        signal.SIGUSR1, all_threads=True
    )  # `kill -USR1 <pid>` dumps every thread's stack
    handle.start()
    scheme = "TLS" if config.tls else "plaintext, no TLS: use only on a trusted network"
    print(
        f"autohas server listening on {handle.address} ({scheme}); data dir {config.data_dir}; "
        f"operator token from {source}",
        flush=True,
    )
    # Wait in slices: the kernel may deliver the signal to a gRPC core thread, and Python runs the handler
    # only when the main thread next executes bytecode, which a wait without timeout never does.
    while not stop.wait(timeout=0.5):
        pass
    print("autohas server: stopping", flush=True)
    handle.stop(grace=5.0)
    return 0

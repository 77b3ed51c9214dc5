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
        "--search-workers",
        type=int,
        default=1,
        help="worker processes per search under torchrun (one GPU each with CUDA)",
    )
    parser.add_argument(
        "--engine",
        default="autohas_edge.server.engine",
        help=argparse.SUPPRESS,  # a test hook: the module adapting the engine (tests name a fake)
    )


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
        engine=args.engine,
        rpc_threads=args.rpc_threads,
        max_streams=args.max_streams,
        reflection=args.reflection,
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

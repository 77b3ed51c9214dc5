"""`autohas keygen KEY.pem`: a new Ed25519 key pair for signing bundles (the app pins KEY.pub.pem)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autohas keygen`."""
    parser.add_argument(
        "key",
        type=Path,
        help="private key file to create (0600; never overwritten); the public key goes to "
        "KEY.pub.pem beside it",
    )


def run(args: argparse.Namespace) -> int:
    """Make the key pair; one-line error and exit 2 when the file exists or cannot be written."""
    from autohas_edge.export.signing import generate_key

    try:
        public, signer = generate_key(args.key)
    except FileExistsError:
        print(f"autohas keygen: {args.key} exists; it is never overwritten", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"autohas keygen: cannot write {args.key}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(f"private key {args.key} (keep it secret); public key {public}, id {signer}")
    print(f"sign with --signing-key {args.key}; apps pin {public} (Hub(trusted_keys=[...]))")
    return 0

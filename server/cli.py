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
    "tasks": ("autohas_edge.server.operator_cli:tasks", "operator: create and list tasks"),
    "jobs": (
        "autohas_edge.server.operator_cli:jobs",
        "operator: start, list, get, watch and cancel search jobs",
    ),
    "models": (
        "autohas_edge.server.operator_cli:models",
        "operator: export jobs, list and download a task's models",
    ),
    "audit": ("autohas_edge.server.operator_cli:audit", "operator: whose data a job used"),
}


#: command -> usage examples, shown at the end of `autohas COMMAND --help`
EXAMPLES: dict[str, str] = {
    "search": """examples:
  autohas search --dataset mnist1d --out runs/mnist1d
  autohas search --dataset my_data.npz --layout signal --channels last --out runs/mine
  autohas search --dataset digits --max-params 20000 --steps 600 --device cuda --out runs/digits
  autohas search --dataset my_data.npz --out runs/mine --retrain --retrain-steps 3000""",
    "export": """examples:
  autohas export runs/mine --out dist/
  autohas export runs/a runs/b --formats onnx,tflite-int8 --reference synthetic --out dist/""",
    "verify": """examples:
  autohas verify dist/mine
  autohas verify dist/a dist/b --threads 1""",
    "server": """examples:
  autohas server --data-dir var/dev                      # loopback, plaintext, a token file in var/dev
  AUTOHAS_OPERATOR_TOKEN=... autohas server --data-dir var/prod --host 0.0.0.0 \\
      --tls-cert server.pem --tls-key server.key --enrollment-keys enrollment.json""",
    "tasks": """examples (the token: $AUTOHAS_OPERATOR_TOKEN or --token-file):
  autohas tasks --address host:50051 --tls-root-cert ca.pem create accel \\
      --app-id com.example.gestures --purpose personalization --input-shape 3,100 \\
      --num-classes 4 --layout signal
  autohas tasks --token-file var/dev/operator_token list""",
    "jobs": """examples (the token: $AUTOHAS_OPERATOR_TOKEN or --token-file):
  autohas jobs start accel --steps 300 --max-params 20000 --watch
  autohas jobs list --task-id accel
  autohas jobs watch JOB_ID
  autohas jobs cancel JOB_ID""",
    "models": """examples (the token: $AUTOHAS_OPERATOR_TOKEN or --token-file):
  autohas models export JOB_ID --formats onnx,tflite-int8
  autohas models list accel
  autohas models download --task-id accel --out dist/accel && autohas verify dist/accel""",
    "audit": """examples (the token: $AUTOHAS_OPERATOR_TOKEN or --token-file):
  autohas audit JOB_ID""",
    "demo": """examples:
  autohas demo
  autohas demo --users 8 --steps 60 --retrain-steps 300 --report report/quick""",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and shows every option's default (unless its help does)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or any(action.default is none for none in (None, argparse.SUPPRESS, False))
            or action.default == ""
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The parser of `autohas NAME`, with the command's examples after its options."""
    return argparse.ArgumentParser(
        prog=f"autohas {name}",
        description=description,
        epilog=EXAMPLES.get(name),
        formatter_class=HelpFormatter,
    )


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
    module_name, _, attribute = module_name.partition(":")
    module = importlib.import_module(module_name)
    if attribute:  # a command object within the module (the operator's commands share one)
        module = getattr(module, attribute)
    parser = make_parser(name, help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`autohas demo`: the whole product end to end on embedded defaults."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autohas demo`."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var/demo"),
        help="server data and simulated devices (wiped at start)",
    )
    parser.add_argument(
        "--report", type=Path, default=Path("report"), help="Markdown + PNG report folder"
    )
    parser.add_argument("--users", type=int, default=20, help="simulated phones, one user each")
    parser.add_argument("--steps", type=int, default=150, help="search steps")
    parser.add_argument(
        "--retrain-steps", type=int, default=1000, help="training steps of the derived model"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the users' data and the search"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="loopback port of the server (0 = a free one)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; one-line errors for a bad environment."""
    from autohas_edge.server.demo.run import DemoConfig, run_demo
    from autohas_edge.server.demo.summary import print_summary, write_report

    try:
        config = DemoConfig(
            args.data_dir,
            args.report,
            users=args.users,
            steps=args.steps,
            retrain_steps=args.retrain_steps,
            seed=args.seed,
            port=args.port,
        )
        _fresh(args.data_dir)
        start = time.perf_counter()
        outcome = run_demo(config)
    except (ValueError, OSError) as err:
        print(f"autohas demo: {err}", file=sys.stderr)
        return 2
    print_summary(outcome)
    path = write_report(outcome, args.report)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s; report: {path}")
    return 0


def _fresh(data_dir: Path) -> None:
    """Empty the data dir, and fail now (one line) if it cannot be written."""
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    probe = data_dir / ".writable"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise OSError(f"data dir {data_dir} is not writable: {err.strerror}") from err

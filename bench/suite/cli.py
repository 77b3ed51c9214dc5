"""`python -m bench.suite [--quick | --full]`: run the plan (resuming), then write the section.

    .venv/bin/python -m bench.suite --quick            # about 7 minutes on 2 cores, one seed
    .venv/bin/python -m bench.suite --full             # five seeds, >= 30 trials: about 2.3 hours
    .venv/bin/python -m bench.suite --full --seeds 0 1 2   # the first three seeds (resumable)
    .venv/bin/python -m bench.suite --full --report    # report what the results file has so far

Results go to bench/suite-<preset>.jsonl (appended cell by cell; a rerun runs only missing cells),
the section `suite-<preset>` of bench/RESULTS.md and bench/suite-<preset>-{curves,pareto}.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from bench.results import RESULTS, write_section
from bench.suite.describe import body
from bench.suite.figures import Table, methods_in
from bench.suite.plot import plot_curves, plot_pareto
from bench.suite.presets import PRESETS, QUICK, Preset
from bench.suite.runner import completed, execute
from bench.suite.store import load

BENCH = Path(__file__).resolve().parents[1]
NOTES = Path(__file__).with_name("notes")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_const", const="quick", dest="preset")
    which.add_argument("--full", action="store_const", const="full", dest="preset")
    parser.add_argument("--tasks", nargs="+", help="a subset of the preset's tasks")
    parser.add_argument("--methods", nargs="+", help="a subset of the preset's methods")
    parser.add_argument("--seeds", type=int, nargs="+", help="other seeds")
    # one thread: these models are too small for intra-op parallelism, and on a shared 2-core
    # machine a second thread mostly waits for the other jobs' core
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, help="default: bench/suite-<preset>.jsonl")
    parser.add_argument("--restart", action="store_true", help="empty the results file first")
    parser.add_argument(
        "--rerun",
        nargs="+",
        default=(),
        metavar="METHOD",
        help="drop these methods' cells and run them again (after changing them); the others stay",
    )
    parser.add_argument("--report", action="store_true", help="run nothing; report the file")
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    return parser.parse_args(argv)


def chosen(args: argparse.Namespace) -> Preset:
    """The preset with the command line's subsets."""
    preset = PRESETS[args.preset] if args.preset else QUICK
    changes: dict[str, Any] = {
        k: tuple(getattr(args, k)) for k in ("tasks", "methods", "seeds") if getattr(args, k)
    }
    return dataclasses.replace(preset, **changes)


def report(
    preset: Preset,
    path: Path,
    write: bool,
    command: str,
    plot_dir: Path = BENCH,
    section: Path = RESULTS,
) -> str:
    """Write the plots and the section (or print them only); returns the body."""
    results = load(path)
    records = list(completed(preset, results))
    table, tasks = Table(tuple(records)), [t for t in preset.tasks if t in results.calibrations]
    methods = [m for m in preset.methods if m in methods_in(records)]
    plots = {kind: plot_dir / f"suite-{preset.name}-{kind}.png" for kind in ("curves", "pareto")}
    if write and records:
        plot_curves(table, tasks, methods, plots["curves"])
        plot_pareto(table, tasks, methods, plots["pareto"])
    notes = NOTES / f"{preset.name}.md"
    text = body(preset, results, table, tasks, methods, plots, notes)
    if write:
        write_section(f"suite-{preset.name}", command, text, section)
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the preset's missing cells, then report."""
    args = parse(argv)
    preset = chosen(args)
    path = args.results or BENCH / f"suite-{preset.name}.jsonl"
    if not args.report:
        execute(preset, path, args.threads, args.restart, rerun=tuple(args.rerun))
    # the section names the command that runs (or resumes) the plan, not a mere re-report
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.suite", *(a for a in given if a != "--report")])
    print(report(preset, path, not args.no_write, command))
    return 0

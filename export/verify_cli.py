"""`autohas verify BUNDLE [BUNDLE ...]`: re-check hashes and reference outputs, with no torch needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autohas_edge.export.errors import ExportError
from autohas_edge.export.quiet import native_log
from autohas_edge.export.verify import ArtifactCheck, VerificationReport, verify_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autohas verify`."""
    parser.add_argument(
        "bundles", nargs="+", type=Path, help="bundle directories written by `autohas export`"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="runtime threads (default: the runtime's)"
    )


def run(args: argparse.Namespace) -> int:
    """Verify each bundle; exit 1 if any file or artifact fails."""
    with native_log():  # the runtimes' C++ start-up lines go to a log file
        return _verify_all(args)


def _verify_all(args: argparse.Namespace) -> int:
    failed = 0
    for bundle in args.bundles:
        try:
            report = verify_bundle(bundle, num_threads=args.threads)
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(format_report(report))
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        failed += not report.passed
    return 1 if failed else 0


def format_report(report: VerificationReport) -> str:
    """One line per artifact, then the verdict."""
    lines = [f"{report.bundle}:"] + [f"  {_line(c)}" for c in report.checks]
    ran = sum(not c.skipped for c in report.checks)
    verdict = "OK" if report.passed else "FAILED"
    count = len(report.problems)
    lines.append(f"  {verdict}: {ran} artifacts run, {count} problem{'' if count == 1 else 's'}")
    return "\n".join(lines)


def _line(check: ArtifactCheck) -> str:
    head = f"{check.file:<22} {check.format:<12}"
    if check.skipped:
        return f"{head} skipped ({check.problem})"
    if check.max_abs_diff is None:
        return f"{head} FAILED"
    status = "ok" if check.passed else "FAILED"
    agreement = check.argmax_agreement or 0.0
    line = (
        f"{head} {status:<6} max|diff| {check.max_abs_diff:.2e}  argmax agreement {agreement:.0%}"
    )
    if "int8" in check.format:  # quantised outputs differ by design: the classes must agree
        line += "  (int8: judged on class agreement)"
    return line

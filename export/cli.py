"""`autohas export RUN [RUN ...] --formats ... --out dist/`: batch export, progress bar, summary table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autohas_edge.export.errors import ExportError, one_line
from autohas_edge.export.formats import ALL_FORMATS, FORMATS, Format, parse_formats
from autohas_edge.export.quiet import native_log

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass
class Row:
    """One run's line in the summary table."""

    run: str
    ok: bool
    bundle: str = ""
    float_accuracy: float | None = None
    int8_accuracy: dict[str, float] | None = None
    seconds: float = 0.0
    error: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `autohas export`."""
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run directories written by `autohas search`"
    )
    parser.add_argument(
        "--formats",
        default=ALL_FORMATS,
        help=f"comma-separated, from {', '.join(FORMATS)} (default: all)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("dist"), help="bundles go to OUT/<run name>/"
    )
    parser.add_argument(
        "--reference",
        choices=("test", "synthetic"),
        default="test",
        help="reference.npz inputs: real test examples, or synthetic ones when the data is personal",
    )
    parser.add_argument(
        "--signing-key",
        type=Path,
        help="Ed25519 private key PEM (`autohas keygen`): sign each bundle (signature.json); "
        "devices refuse unsigned bundles unless the app opts out",
    )


def run(args: argparse.Namespace) -> int:
    """Export every run; one failure does not stop the others; exit 1 if any failed (2 on bad options)."""
    from autohas_edge.export.signing import SigningKeyFileError, load_private_key

    try:
        formats = parse_formats(args.formats)
        key = None if args.signing_key is None else load_private_key(args.signing_key)
    except (ExportError, SigningKeyFileError) as err:
        print(f"autohas export: {err}", file=sys.stderr)
        return 2
    with native_log() as log:  # TensorFlow / LiteRT / XNNPACK start-up lines go to a log file
        rows = export_all(list(args.runs), args.out, formats, args.reference, key)
    print(summary_table(rows))
    failed = sum(not r.ok for r in rows)
    if failed:
        print(f"(the converters' own messages: {log})", file=sys.stderr)
    print(
        f"{len(rows) - failed} exported, {failed} failed"
        + (f" -> {args.out}" if failed < len(rows) else "")
    )
    return 1 if failed else 0


def export_all(
    runs: list[Path],
    out: Path,
    formats: tuple[Format, ...],
    reference: str = "test",
    signing_key: Ed25519PrivateKey | None = None,
) -> list[Row]:
    """Export `runs` one after the other under a tqdm bar, each failure caught and reported; each
    bundle is signed with `signing_key` when one is given."""
    from tqdm import tqdm

    rows: list[Row] = []
    names: dict[str, Path] = {}
    with tqdm(total=len(runs), unit="model", desc="export", file=sys.stderr) as bar:
        for run_dir in runs:
            bar.set_description(f"export {run_dir}")
            bar.set_postfix_str("")
            row = _export_one(
                run_dir, out, formats, names, bar.set_postfix_str, reference, signing_key
            )
            if not row.ok:
                bar.write(f"error: {row.error}", file=sys.stderr)
            rows.append(row)
            bar.update()
    return rows


def _export_one(
    run_dir: Path,
    out: Path,
    formats: tuple[Format, ...],
    names: dict[str, Path],
    stage: Callable[[str], None],
    reference: str = "test",
    signing_key: Ed25519PrivateKey | None = None,
) -> Row:
    name = run_dir.resolve().name
    if name in names:
        problem = f"{run_dir}: bundle name {name!r} already used by {names[name]} in this batch"
        return Row(str(run_dir), False, error=problem)
    names[name] = run_dir
    try:
        from autohas_edge.export.run import export_run

        report = export_run(run_dir, out, formats, on_stage=stage, reference=reference)
        if signing_key is not None:
            from autohas_edge.export.signing import sign_bundle

            sign_bundle(report.bundle, signing_key)
    except ExportError as err:
        return Row(str(run_dir), False, error=str(err))
    except (
        Exception
    ) as err:  # one broken model must not stop the batch; say what broke, in one line
        return Row(str(run_dir), False, error=one_line(f"{run_dir}: {type(err).__name__}: {err}"))
    return Row(
        str(run_dir),
        True,
        str(report.bundle),
        report.float_test_accuracy,
        report.int8_test_accuracy,
        report.seconds,
    )


def summary_table(rows: list[Row]) -> str:
    """A plain-text table: run, status, bundle, float / int8 test accuracy, seconds, error."""
    headers = ["run", "status", "bundle", "float acc", "int8 acc (min)", "seconds", "error"]
    lines = [_cells(r) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(out)


def _cells(r: Row) -> list[str]:
    seconds = f"{r.seconds:.1f}" if r.ok else ""
    status = "ok" if r.ok else "FAILED"
    return [
        r.run,
        status,
        r.bundle,
        _pct(r.float_accuracy),
        _pct(_min(r.int8_accuracy)),
        seconds,
        r.error,
    ]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _min(values: dict[str, float] | None) -> float | None:
    return min(values.values()) if values else None

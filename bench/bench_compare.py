"""Benchmark AutoHAS against NAS-only, HPO-only, random search and Optuna TPE at equal compute.

On MNIST-1D and digits, several seeds each, every method runs under one budget counted in training
examples processed (forward + backward, measured by hooks on the models) and in seconds. Writes the
`compare` section of bench/RESULTS.md, a plot (bench/compare.png) and the raw runs as JSON.

    .venv/bin/python -m bench.bench_compare [--quick] [--threads 2] [--seeds 0 1] [--datasets digits]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from bench.compare.harness import DEFAULT, PRESETS, QUICK, Preset, run_preset
from bench.compare.methods import MethodRun
from bench.compare.plot import plot_compare
from bench.compare.report import accuracy_table, by_key, cost_table, curve_table, derived_lines
from bench.results import write_section

HERE = Path(__file__).parent


def describe(preset: Preset, threads: int, seconds: float, loads: tuple[float, float]) -> str:
    """The paragraph above the tables: what was run and how compute is counted."""
    return (
        f"Preset `{preset.name}`: datasets {', '.join(preset.datasets)}; seeds {list(preset.seeds)}; "
        f"AutoHAS: {preset.search_steps} search steps (batch {preset.batch_size}, encoding batch "
        f"{preset.encoding_batch_size}, default space and settings otherwise) + {preset.retrain_steps} "
        f"retraining steps of the derived model on train+val; random search and Optuna TPE "
        f"(`TPESampler(seed=seed, n_startup_trials={preset.tpe_startup})`) over the same joint space, "
        f"every trial a child trained from scratch for {preset.retrain_steps} steps (AutoHAS's retraining "
        f"recipe) on the train split, selected on validation, reported on test; budget "
        f"{preset.budget_factor:g} C per seed, where C is AutoHAS joint's measured compute on that seed. "
        f"CPU, torch threads = {threads}; whole benchmark {seconds / 60:.1f} min wall-clock; 1-minute load "
        f"average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end (2 cores: above 2, other jobs "
        f"competed for the CPU, which inflates wall-clock figures; CPU s is the CPU time this process "
        "got).\n\n"
        "Compute = training examples processed, counted by a forward hook on the models: every example "
        "of a forward pass whose output is back-propagated counts once per backward pass (so AutoHAS's "
        "first iterations, its temporary-weight steps — two backward passes per forward on the fast path — "
        "its validation pass for the encodings, and its retraining all count); evaluation-only forwards "
        "do not count. A supernet example costs more than a child example (it runs the largest candidate "
        "of every block), which the seconds columns show. Accuracies in %, mean ± sd over seeds. "
        "'To reach joint's acc' is the compute at which a method's selected model first matched AutoHAS "
        "joint's test accuracy on the same seed, in multiples of joint's own compute (geometric mean over "
        "the seeds that reached it): k C with k > 1 means AutoHAS joint needed k times less; k < 1 means "
        "the method matched it with less compute than AutoHAS used."
    )


def report(runs: list[MethodRun], preset: Preset, intro: str) -> str:
    """The Markdown body of the `compare` section."""
    keyed, parts = by_key(runs), [intro]
    for dataset in preset.datasets:
        parts += [
            f"### {dataset}",
            "Best test accuracy vs compute (C = AutoHAS joint's compute on the same seed):",
            accuracy_table(keyed, preset, dataset),
            "Baselines' best-so-far test accuracy at multiples of C:",
            curve_table(keyed, preset, dataset),
            "AutoHAS search cost relative to training its derived model once:",
            cost_table(keyed, preset, dataset),
            derived_lines(keyed, preset, dataset),
        ]
    return "\n\n".join(parts) + "\n"


def save_runs(runs: list[MethodRun], path: Path) -> None:
    """All runs (points and details) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1, default=str))


def section_name(preset: Preset) -> str:
    """`compare` for the default preset, `compare-<name>` for the others (both can coexist)."""
    return "compare" if preset.name == DEFAULT.name else f"compare-{preset.name}"


def _default_plot(preset: Preset) -> Path:
    # only the default preset's plot is meant to be committed; the others go to the ignored bench/out/
    if preset.name == DEFAULT.name:
        return HERE / "compare.png"
    return HERE / "out" / f"compare-{preset.name}.png"


def _preset(args: argparse.Namespace) -> Preset:
    preset = QUICK if args.quick else PRESETS[args.preset]
    changes = {k: tuple(v) for k, v in (("seeds", args.seeds), ("datasets", args.datasets)) if v}
    return dataclasses.replace(preset, **changes)


def main(argv: list[str] | None = None) -> int:
    """Run the preset, then write the table, the plot and the raw JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the few-minute preset")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT.name)
    # one thread: these models are too small for intra-op parallelism to pay, and on a busy machine
    # a second thread mostly spin-waits (measured here: 10x the CPU time per step with 2 threads)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--plot", type=Path, help="default: bench/compare.png (quick: bench/out/)")
    parser.add_argument(
        "--json", type=Path, help="raw runs; default: bench/out/compare-<preset>.json"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the report; write no section"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = _preset(args)
    start, load = time.perf_counter(), os.getloadavg()[0]
    runs = run_preset(preset, log=lambda line: print(line, flush=True))
    loads = (load, os.getloadavg()[0])
    save_runs(runs, args.json or HERE / "out" / f"compare-{preset.name}.json")
    plot_compare(runs, preset.datasets, args.plot or _default_plot(preset))
    body = report(runs, preset, describe(preset, args.threads, time.perf_counter() - start, loads))
    print(body)
    if not args.no_write:
        command = "python -m bench.bench_compare " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_section(section_name(preset), command.strip(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

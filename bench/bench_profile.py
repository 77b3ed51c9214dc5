"""Where a search step's time goes (torch.profiler), beside a retraining step of the derived model.

    .venv/bin/python -m bench.bench_profile [--dataset mnist1d] [--steps 60] [--strategy differentiable]

Runs a short search (warm-up included) and the retraining of its result under torch.profiler at the
default thread count, sums the CPU time of the engine's labelled regions (`search.*`, `retrain.step`),
and writes a table to the `profile` section of bench/RESULTS.md. The ratio "search step / retraining
step" compares the two at the same batch size (SearchConfig.batch_size is both). The differentiable
strategy runs twice, side by side in one run: the windowed hyper-parameter signal (the default) and
the one-step form.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import markdown_table, write_section

#: regions the engine labels, in the order a step runs them
REGIONS = [
    "search.data_and_augmentation",
    "search.first_iteration",
    "search.temporary_weights",
    "search.validation_forward",
    "search.encoding_update",
    "search.all_reduce",
]


def profile_run(
    dataset: str, steps: int, strategy: str, retrain_steps: int, hp_signal: str = "window"
) -> dict[str, Any]:
    """Search + retrain under the profiler; seconds per labelled region and per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from autohas_edge.server.search import SearchConfig, apply_threads, run_search

    threads = apply_threads(0)
    config = SearchConfig(
        dataset=dataset,
        steps=steps,
        strategy=strategy,
        retrain_steps=retrain_steps,
        device="cpu",
        hp_signal=hp_signal,
    )
    with tempfile.TemporaryDirectory() as out, profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        result = run_search(config, Path(out))
        wall = time.perf_counter() - start
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if "." in e.key}
    return {
        "result": result,
        "regions": {r: totals.get(r, 0.0) for r in [*REGIONS, "retrain.step"]},
        "wall": wall,
        "threads": threads,
        "torch": torch.__version__,
    }


def warm_up(dataset: str) -> None:
    """A tiny unprofiled search first, so the first profiled form does not pay the process's one-off
    start-up (imports, data generation, allocator and kernel warm-up) and the forms compare fairly."""
    from autohas_edge.server.search import SearchConfig, run_search

    with tempfile.TemporaryDirectory() as out:
        config = SearchConfig(dataset=dataset, steps=8, retrain_steps=2, device="cpu", plot=False)
        run_search(config, Path(out))


def report(run: dict[str, Any], steps: int) -> str:
    """The markdown body: per-region table, the two ratios, and the run's figures."""
    result, regions = run["result"], run["regions"]
    search_steps = int(result["search_steps"])
    alternating = max(1, search_steps - int(steps * 0.25))
    retrain_step = regions["retrain.step"] / max(1, int(result["retrain_steps"]))
    search_total = sum(regions[r] for r in REGIONS)
    rows = []
    for region in REGIONS:
        per = (
            alternating
            if region not in ("search.first_iteration", "search.data_and_augmentation")
            else search_steps
        )
        seconds = regions[region]
        rows.append(
            [
                region,
                f"{seconds:.2f}",
                f"{1000 * seconds / per:.1f}",
                f"{seconds / search_total:.0%}",
            ]
        )
    step = result["search_seconds"] / max(1, search_steps)
    ratio = step / retrain_step if retrain_step else float("nan")
    table = markdown_table(["region", "CPU s", "ms per step it runs", "share"], rows)
    return (
        f"{table}\n\n"
        f"- search: {search_steps} steps in {result['search_seconds']:.1f} s "
        f"({1000 * step:.0f} ms a step, profiler on); retraining: {result['retrain_steps']} steps, "
        f"{1000 * retrain_step:.1f} ms a step (profiled CPU time)\n"
        f"- **search step / retraining step: {ratio:.1f}x** (target <= 4x)\n"
        f"- search seconds / retraining seconds: "
        f"{result['search_seconds'] / max(1e-9, result['retrain_seconds']):.2f}\n"
        f"- torch threads {run['threads']}, torch {run['torch']}, 1-minute load at the end "
        f"{os.getloadavg()[0]:.1f} (2 cores: above ~1, other work shared the CPU)\n"
        f"- derived model: {result['params']} parameters, test accuracy {result['test_accuracy']:.3f}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Profile one short search per form and write the `profile` section."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--retrain-steps", type=int, default=300)
    parser.add_argument("--strategy", default="differentiable")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    signals = ("window", "one-step") if args.strategy == "differentiable" else ("window",)
    warm_up(args.dataset)
    parts = []
    for signal in signals:
        run = profile_run(args.dataset, args.steps, args.strategy, args.retrain_steps, signal)
        title = f"### hp_signal={signal}\n\n" if len(signals) > 1 else ""
        parts.append(title + report(run, args.steps))
    body = "\n".join(parts)
    print(body)
    if not args.no_write:
        command = f"python -m bench.bench_profile --dataset {args.dataset} --steps {args.steps}"
        write_section(f"profile ({args.strategy})", command, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

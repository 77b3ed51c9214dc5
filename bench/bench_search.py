"""Benchmark the search engine: MNIST-1D with default settings in joint, nas and hpo mode, and random
search at the joint search's compute as the baseline.

Writes the `search` section of bench/RESULTS.md: per mode and seed the derived model's test accuracy
and size, search and retraining time and their ratio, both in wall-clock seconds and in the CPU seconds
the process actually got (the box is shared; the load average is reported too).

    .venv/bin/python -m bench.bench_search [--modes joint nas hpo random] [--seeds 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autohas_edge.server.search import (
    LAYOUTS,
    Dataset,
    ProgressEvent,
    SearchConfig,
    accuracy,
    build_model,
    count_params,
    default_space,
    load_dataset,
    model_args_for,
    retrain,
    run_search,
)
from bench.results import markdown_table, write_section

TARGETS = (
    "targets: test accuracy >= 0.97, params <= 50k, search + retrain < 600 s, search / retrain <= 2"
)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Clock:
    """Wall and CPU time at each stage change, from the progress events."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, float]] = {}
        self.load = [os.getloadavg()[0]]

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, (time.perf_counter(), _cpu_seconds()))
        self.load.append(os.getloadavg()[0])

    def on_progress(self, event: ProgressEvent) -> None:
        self.mark(event.stage)

    def cpu(self, start: str, end: str) -> float:
        return self.marks[end][1] - self.marks[start][1]

    def figures(self) -> dict[str, float]:
        """CPU seconds of search and retraining, mean load average, total wall seconds."""
        return {
            "search_cpu": self.cpu("search", "retrain"),
            "retrain_cpu": self.cpu("retrain", "evaluate"),
            "load": sum(self.load) / len(self.load),
            "wall_seconds": self.marks["done"][0] - self.marks["load"][0],
        }


def run_mode(mode: str, out: Path, seed: int) -> dict[str, Any]:
    """One default-settings MNIST-1D run: its result plus CPU and load figures."""
    clock = _Clock()
    result = run_search(
        SearchConfig(dataset="mnist1d", mode=mode, seed=seed, device="cpu"),
        out / f"{mode}-seed{seed}",
        on_progress=clock.on_progress,
    )
    return {**result, **clock.figures()}


def random_baseline(budget_cpu: float, seed: int, trial_steps: int = 300) -> dict[str, Any]:
    """Random search at the same compute (the guard method.md asks for): sample (architecture, HP basis)
    pairs uniformly within the parameter budget, train each for `trial_steps` steps until the joint
    search's CPU seconds are spent, keep the best on the validation split, and retrain it exactly like
    the searched models."""
    config = SearchConfig(dataset="mnist1d", seed=seed, device="cpu")
    data = load_dataset(config.dataset, seed=seed)
    space = default_space(LAYOUTS[data.family], data.modality, "joint")
    rng, clock = random.Random(seed), _Clock()
    clock.mark("load")
    clock.mark("search")
    trials: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    while _cpu_seconds() - clock.marks["search"][1] < budget_cpu or not trials:
        arch = {c.name: rng.choice(c.candidates) for c in space.arch}
        hps = {c.name: rng.choice(c.candidates) for c in space.hparams}
        args = model_args_for(LAYOUTS[data.family], data.input_shape, data.num_classes, arch)
        if count_params(args) <= config.max_params:
            model = _train(data, args, hps, trial_steps, with_val=False, seed=seed + len(trials))
            val = accuracy(model, torch.as_tensor(data.x_val), torch.as_tensor(data.y_val))
            trials.append((val, arch, hps))
    clock.mark("retrain")
    _, arch, hps = max(trials, key=lambda t: t[0])
    args = model_args_for(LAYOUTS[data.family], data.input_shape, data.num_classes, arch)
    model = _train(data, args, hps, config.retrain_steps, with_val=True, seed=seed + 1)
    clock.mark("evaluate")
    test_accuracy = accuracy(model, torch.as_tensor(data.x_test), torch.as_tensor(data.y_test))
    clock.mark("done")
    wall = {stage: mark[0] for stage, mark in clock.marks.items()}
    return {
        "test_accuracy": test_accuracy,
        "params": count_params(args),
        "architecture": arch,
        "hyperparameters": hps,
        "search_steps": f"{len(trials)} trials",
        "retrain_steps": config.retrain_steps,
        "search_seconds": wall["retrain"] - wall["search"],
        "retrain_seconds": wall["evaluate"] - wall["retrain"],
        **clock.figures(),
    }


def _train(
    data: Dataset, args: dict[str, Any], hps: dict[str, Any], steps: int, with_val: bool, seed: int
) -> torch.nn.Module:
    """A model trained from scratch with the search engine's own retraining loop."""
    torch.manual_seed(seed)
    model = build_model(args)
    model.norm_mean.fill_(float(data.x_train.mean()))
    model.norm_std.fill_(float(data.x_train.std()))
    x, y = data.x_train, data.y_train
    if with_val:
        x, y = np.concatenate([x, data.x_val]), np.concatenate([y, data.y_val])
    retrain(
        model,
        torch.as_tensor(x),
        torch.as_tensor(y),
        hps,
        steps,
        128,
        float(data.x_train.std()),
        torch.Generator().manual_seed(seed),
        5.0,
    )
    return model


def _row(mode: str, seed: int, r: dict[str, Any]) -> list[object]:
    hps = r["hyperparameters"]
    return [
        mode,
        seed,
        f"{r['test_accuracy']:.3f}",
        r["params"],
        r["search_steps"],
        r["retrain_steps"],
        f"{r['search_seconds']:.0f}",
        f"{r['retrain_seconds']:.0f}",
        f"{r['search_seconds'] / r['retrain_seconds']:.2f}",
        f"{r['search_cpu']:.0f}",
        f"{r['retrain_cpu']:.0f}",
        f"{r['search_cpu'] / r['retrain_cpu']:.2f}",
        f"{r['search_seconds'] + r['retrain_seconds']:.0f}",
        f"{r['load']:.1f}",
        f"{hps['optimizer']} lr={float(hps['learning_rate']):.3g} wd={float(hps['weight_decay']):.2g} "
        f"{hps['loss']} {hps['augment']}",
    ]


HEADERS = [
    "mode",
    "seed",
    "test acc",
    "params",
    "search steps",
    "retrain steps",
    "search s",
    "retrain s",
    "ratio",
    "search CPU s",
    "retrain CPU s",
    "CPU ratio",
    "search+retrain s",
    "load",
    "derived hyper-parameters",
]


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def report(results: list[tuple[str, int, dict[str, Any]]], threads: int) -> str:
    """The Markdown body: the table, what its columns mean, and the derived architectures."""
    table = markdown_table(HEADERS, [_row(mode, seed, r) for mode, seed, r in results])
    archs = "\n".join(
        f"- {mode} (seed {seed}): " + _pairs(r["architecture"]) for mode, seed, r in results
    )
    return (
        f"MNIST-1D, default `SearchConfig` (search, then retraining of the derived model on train+val; "
        f"test split of 1000), CPU, torch threads = {threads}.\n{TARGETS}.\n\n{table}\n\n"
        "`ratio` = search s / retrain s (wall clock); `CPU ratio` is the same from the CPU seconds the "
        "process got, which other jobs on the machine do not distort. `load` is the mean 1-minute load "
        "average during the run: above the core count means other jobs competed for the CPU and "
        "inflated the wall-clock columns. `random` is random search at the joint search's CPU seconds "
        "(each sample trained 300 steps, the best on validation retrained like the others).\n\n"
        f"Derived architectures:\n{archs}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the modes and seeds, print the table, and write the `search` section of bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["joint", "nas", "hpo", "random"],
        choices=["joint", "nas", "hpo", "random"],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: list[tuple[str, int, dict[str, Any]]] = []
    for seed in args.seeds:
        budget = 120.0
        for mode in args.modes:
            if mode == "random":
                result = random_baseline(budget, seed)
            else:
                result = run_mode(mode, Path(args.out), seed)
                budget = result["search_cpu"] if mode == "joint" else budget
            results.append((mode, seed, result))
            print(_row(mode, seed, result), flush=True)
    body = report(results, args.threads)
    print(body)
    if not args.no_write:
        command = "python -m bench.bench_search " + " ".join(sys.argv[1:] if argv is None else argv)
        write_section("search", command.strip(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The accuracy-vs-compute plot: per dataset, mean and min–max over seeds per method, against
training examples (top row) and against CPU seconds (bottom row: a supernet example costs more)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.compare.methods import MethodRun
from bench.compare.report import at_compute

COLOURS = {
    "autohas-joint": "tab:red",
    "autohas-nas": "tab:orange",
    "autohas-hpo": "tab:purple",
    "random": "tab:blue",
    "tpe": "tab:green",
}
#: (Point field, axis label, scale)
UNITS = (
    ("examples", "training examples processed (forward + backward), thousands", 1e-3),
    ("cpu_seconds", "CPU seconds (one thread)", 1.0),
)


def _curve(runs: list[MethodRun], grid: np.ndarray, unit: str) -> tuple[np.ndarray, ...]:
    """Mean, min and max over seeds of the incumbent's test accuracy (NaN until every seed has one)."""
    acc = np.array(
        [
            [(p.test_accuracy if (p := at_compute(r, x, unit)) else math.nan) for x in grid]
            for r in runs
        ]
    )
    out = np.full((3, len(grid)), math.nan)
    complete = ~np.isnan(acc).any(axis=0)
    if complete.any():
        kept = acc[:, complete]
        out[:, complete] = kept.mean(axis=0), kept.min(axis=0), kept.max(axis=0)
    return out[0], out[1], out[2]


def plot_compare(runs: list[MethodRun], datasets: tuple[str, ...], path: Path) -> None:
    """Write the PNG: baselines as step curves with a min–max band, AutoHAS modes as error-bar points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(datasets), figsize=(5.2 * len(datasets), 7.0), squeeze=False)
    for col, dataset in enumerate(datasets):
        for row, (unit, label, scale) in enumerate(UNITS):
            ax = axes[row][col]
            _panel(ax, [r for r in runs if r.dataset == dataset], unit, scale)
            ax.set_title(f"{dataset}: test accuracy vs {unit.replace('_', ' ')}", fontsize=10)
            ax.set_xlabel(label, fontsize=8)
            ax.grid(alpha=0.3)
        axes[0][col].legend(fontsize=7, loc="lower right")
    for row in axes:
        row[0].set_ylabel("test accuracy of the selected model", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _panel(ax: Any, runs: list[MethodRun], unit: str, scale: float) -> None:
    grid = np.linspace(0, max(getattr(r.final, unit) for r in runs), 300)
    low = 1.0
    for method, colour in COLOURS.items():
        own = [r for r in runs if r.method == method]
        if not own:
            continue
        if own[0].budget:
            mean, lo, hi = _curve(own, grid, unit)
            ax.step(grid * scale, mean, where="post", color=colour, label=method)
            ax.fill_between(grid * scale, lo, hi, step="post", color=colour, alpha=0.15)
            low = min(low, float(np.nanmin(lo))) if not np.isnan(lo).all() else low
            continue
        x = np.array([getattr(r.final, unit) * scale for r in own])
        y = np.array([r.final.test_accuracy for r in own])
        spread = [[y.mean() - y.min()], [y.max() - y.mean()]]
        ax.errorbar(
            x.mean(),
            y.mean(),
            xerr=x.std(),
            yerr=spread,
            fmt="o",
            color=colour,
            capsize=3,
            label=method,
        )
        low = min(low, float(y.min()))
    ax.set_xlim(left=0)
    ax.set_ylim(max(0.0, low - 0.02), 1.0)

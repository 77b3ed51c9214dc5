"""The accuracy-vs-compute plot: one panel per dataset, mean and min–max over seeds per method."""

from __future__ import annotations

import math
from pathlib import Path

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


def _curve(runs: list[MethodRun], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds of the incumbent's test accuracy (NaN until every seed has one)."""
    acc = np.array([[(p.test_accuracy if (p := at_compute(r, x)) else math.nan) for x in grid] for r in runs])
    complete = ~np.isnan(acc).any(axis=0)
    nan = np.full(len(grid), math.nan)
    if not complete.any():
        return nan, nan, nan
    mean, lo, hi = nan.copy(), nan.copy(), nan.copy()
    mean[complete] = acc[:, complete].mean(axis=0)
    lo[complete], hi[complete] = acc[:, complete].min(axis=0), acc[:, complete].max(axis=0)
    return mean, lo, hi


def plot_compare(runs: list[MethodRun], datasets: tuple[str, ...], path: Path) -> None:
    """Write the PNG: baselines as step curves with a min–max band, AutoHAS modes as error-bar points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [r for r in runs if r.dataset == dataset]
        _panel(ax, mine)
        ax.set_title(dataset)
        ax.set_xlabel("training examples processed (forward + backward), thousands")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy of the selected model")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _panel(ax: object, runs: list[MethodRun]) -> None:
    top = max(r.final.examples for r in runs)
    grid = np.linspace(0, top, 300)
    low = 1.0
    for method, colour in COLOURS.items():
        own = [r for r in runs if r.method == method]
        if not own:
            continue
        if own[0].budget:
            mean, lo, hi = _curve(own, grid)
            ax.step(grid / 1e3, mean, where="post", color=colour, label=method)
            ax.fill_between(grid / 1e3, lo, hi, step="post", color=colour, alpha=0.15)
            low = min(low, np.nanmin(lo) if not np.isnan(lo).all() else low)
        else:
            x = np.array([r.final.examples / 1e3 for r in own])
            y = np.array([r.final.test_accuracy for r in own])
            spread = [[y.mean() - y.min()], [y.max() - y.mean()]]
            ax.errorbar(
                x.mean(), y.mean(), xerr=x.std(), yerr=spread, fmt="o", color=colour, capsize=3, label=method
            )
            low = min(low, float(y.min()))
    ax.set_ylim(max(0.0, low - 0.02), 1.0)

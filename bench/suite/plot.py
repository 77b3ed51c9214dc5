"""The PNG figures: best-so-far test accuracy vs device-seconds, and accuracy vs size and latency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.suite.figures import Table
from bench.suite.methods import TRIAL_METHODS

COLOURS = {
    "autohas": "tab:red",
    "autohas-reinforce": "tab:pink",
    "autohas-nas": "tab:orange",
    "autohas-hpo": "tab:purple",
    "nas-then-hpo": "tab:brown",
    "random": "tab:blue",
    "tpe": "tab:green",
    "tpe-hyperband": "tab:olive",
    "ws-random": "tab:gray",
}


def _plain_log_axis(ax: Any) -> None:
    """A log x axis labelled with plain numbers (narrow ranges get unreadable exponents)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _step_mean(curves: list[list[tuple[float, float]]], grid: np.ndarray) -> np.ndarray:
    """Mean over seeds of each curve's value at every grid cost (NaN until every seed has a point)."""
    values = np.full((len(curves), len(grid)), np.nan)
    for i, curve in enumerate(curves):
        for cost, acc in curve:
            values[i, grid >= cost] = acc
    mean: np.ndarray = values.mean(axis=0)
    return mean


def _curve_panel(ax: Any, table: Table, task: str, methods: list[str]) -> None:
    for method in methods:
        seeds = sorted(table.cells(task, method))
        curves = [c for c in (table.curve(task, method, s) for s in seeds) if c]
        if not curves:
            continue
        colour = COLOURS.get(method, "black")
        if method in TRIAL_METHODS:
            costs = [c for curve in curves for c, _ in curve]
            grid = np.geomspace(min(costs), max(costs), 200)
            ax.step(grid, _step_mean(curves, grid), where="post", color=colour, label=method)
            continue
        x = np.array([[c for c, _ in curve] for curve in curves if len(curve) == len(curves[0])])
        y = np.array([[a for _, a in curve] for curve in curves if len(curve) == len(curves[0])])
        yerr = [y.mean(0) - y.min(0), y.max(0) - y.mean(0)]
        ax.errorbar(
            x.mean(0), y.mean(0), yerr=yerr, fmt="o-", color=colour, capsize=3, label=method
        )
    _plain_log_axis(ax)
    ax.set_title(f"{task}: best-so-far test accuracy", fontsize=9)
    ax.set_xlabel("device-seconds (CPU s, search + final retraining)", fontsize=8)
    ax.grid(alpha=0.3)


def plot_curves(table: Table, tasks: list[str], methods: list[str], path: Path) -> None:
    """One panel per task; trial-based methods as mean step curves, the others as points (min-max)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        _curve_panel(ax, table, task, methods)
    axes[0][0].set_ylabel("test accuracy", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _pareto_front(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats in both smaller x and higher y, by increasing x."""
    order = np.argsort(x)
    front, best = [], -np.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return x[front], y[front]


def _pareto_panel(ax: Any, table: Table, task: str, methods: list[str], key: str) -> None:
    xs: list[float] = []
    ys: list[float] = []
    for method in methods:
        cells = list(table.cells(task, method).values())
        if not cells:
            continue
        x, y = [r[key] for r in cells], [r["test_accuracy"] for r in cells]
        ax.scatter(x, y, s=14, color=COLOURS.get(method, "black"), label=method, alpha=0.8)
        xs, ys = xs + x, ys + y
    if xs:
        fx, fy = _pareto_front(np.array(xs, float), np.array(ys, float))
        ax.step(fx, fy, where="post", color="black", lw=0.8, ls="--")
    _plain_log_axis(ax)
    ax.grid(alpha=0.3)


def plot_pareto(table: Table, tasks: list[str], methods: list[str], path: Path) -> None:
    """Final models' test accuracy against parameters (top) and ONNX Runtime latency (bottom)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.6), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (key, label) in enumerate((("params", "parameters"), ("latency_ms", "ms"))):
            ax = axes[row][col]
            _pareto_panel(ax, table, task, methods, key)
            ax.set_xlabel(
                label if key == "params" else "ONNX Runtime latency, 1 thread (ms)", fontsize=8
            )
            ax.set_title(f"{task}: final models", fontsize=9)
    for row in axes:
        row[0].set_ylabel("test accuracy", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)

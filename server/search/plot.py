"""search.png: the learning-rate trajectory, losses and the encodings over the search."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autohas_edge.server.search.space import SearchSpace

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("", "o", "s", "^", "v", "D", "x", "+")


def plot_search(
    history: dict[str, Any], space: SearchSpace, path: Path, result: dict[str, Any] | None = None
) -> None:
    """Write a three-panel PNG: learning rate and losses, HP encodings, architecture encodings.

    `result` (result.json's content) titles the figure (dataset, mode, accuracy) and marks the warm-up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 11), sharex=True)
    _losses(axes[0], history)
    _encodings(axes[1], history, [c for c in space.hparams if len(c) > 1], all_candidates=True)
    axes[1].set_title("hyper-parameter encoding P^H (every candidate)", fontsize=9)
    _encodings(axes[2], history, [c for c in space.arch if len(c) > 1], all_candidates=False)
    axes[2].set_title("architecture encoding P^A (probability of the final choice)", fontsize=9)
    axes[2].set_xlabel("search step")
    warmup = _warmup_steps(result)
    for ax in axes:
        if warmup:
            ax.axvspan(0, warmup, color="0.85", zorder=0)
    if warmup:
        axes[0].text(
            warmup / 2,
            0.03,
            "warm-up",
            transform=axes[0].get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.35",
        )
    if result:
        fig.suptitle(plot_title(result), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if result else 1))  # it makes room for the legends
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_title(result: dict[str, Any]) -> str:
    """The figure's title: dataset, mode, strategy, steps, final accuracy and size."""
    config, data = result.get("config") or {}, result.get("dataset") or {}
    name = data.get("name") or config.get("dataset", "?")
    return (
        f"{name}: {config.get('mode', '?')} search ({config.get('strategy', '?')}), "
        f"{config.get('steps', '?')} steps; final test accuracy "
        f"{float(result.get('test_accuracy', float('nan'))):.3f} with {result.get('params', '?')} "
        "parameters"
    )


def _warmup_steps(result: dict[str, Any] | None) -> int:
    config = (result or {}).get("config") or {}
    return int(int(config.get("steps", 0)) * float(config.get("warmup_fraction", 0)))


def _losses(ax: Any, history: dict[str, Any]) -> None:
    """The searched learning rate (left axis) and the losses (right axis), one legend outside."""
    steps = range(len(history["lr"]))
    lines = ax.plot(
        steps, history["lr"], color="black", label="learning rate E[lr] (SGD-equivalent)"
    )
    ax.set_ylabel("learning rate")
    loss_axis = ax.twinx()
    lines += loss_axis.plot(steps, history["train_loss"], alpha=0.6, label="train loss")
    # measured once a window, not every step: points joined over the steps that have one
    val = [(s, v) for s, v in zip(steps, history["val_loss"], strict=False) if _finite(v)]
    lines += loss_axis.plot(
        [s for s, _ in val], [v for _, v in val], marker=".", alpha=0.8, label="validation loss"
    )
    loss_axis.set_ylabel("loss")
    ax.legend(
        lines,
        [line.get_label() for line in lines],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.08, 1),
        borderaxespad=0,
    )


def _finite(value: Any) -> bool:
    return value is not None and not math.isnan(value)


def matplotlib_colors(n: int = 10) -> list[Any]:
    """`n` distinguishable colours: the default cycle up to 10, tab20 up to 20, then a hue wheel."""
    import matplotlib.pyplot as plt

    if n <= 10:
        colors: list[Any] = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        return colors
    cmap = plt.get_cmap("tab20" if n <= 20 else "hsv")
    return [cmap(i / (20 if n <= 20 else n)) for i in range(n)]


def _encodings(ax: Any, history: dict[str, Any], choices: list, all_candidates: bool) -> None:
    encodings = history["encodings"]
    if not choices or not encodings:
        ax.text(0.5, 0.5, "fixed in this mode", ha="center", va="center", transform=ax.transAxes)
        return
    colors = matplotlib_colors(len(choices))
    every = max(1, len(encodings) // 8)
    for c, choice in enumerate(choices):
        series = [e[choice.name] for e in encodings]
        final = series[-1]
        picks = (
            range(len(choice))
            if all_candidates
            else [max(range(len(final)), key=final.__getitem__)]
        )
        for i in picks:
            # one colour per choice; its candidates differ by line style (and, past the styles and
            # in crowded panels, by markers)
            style = _STYLES[(i if all_candidates else c) % len(_STYLES)]
            marker = _MARKERS[
                (i // len(_STYLES) if all_candidates else c // len(_STYLES)) % len(_MARKERS)
            ]
            ax.plot(
                [s[i] for s in series],
                color=colors[c % len(colors)],
                linestyle=style,
                marker=marker or None,
                markevery=every,
                markersize=3,
                linewidth=1.2,
                label=f"{choice.name}={choice.labels[i]}",
            )
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(
        fontsize=6,
        ncol=2 if len(ax.lines) > 18 else 1,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        borderaxespad=0,
    )

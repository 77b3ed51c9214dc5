"""search.png: the learning-rate trajectory, losses and the encodings over the search."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autohas_edge.server.search.space import SearchSpace


def plot_search(history: dict[str, Any], space: SearchSpace, path: Path) -> None:
    """Write a three-panel PNG: learning rate and losses, HP encodings, architecture encodings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(len(history["lr"]))
    fig, axes = plt.subplots(3, 1, figsize=(9, 11), sharex=True)
    axes[0].plot(steps, history["lr"], color="black", label="learning rate E[lr]")
    axes[0].set_ylabel("learning rate")
    loss_axis = axes[0].twinx()
    loss_axis.plot(steps, history["train_loss"], alpha=0.5, label="train loss")
    loss_axis.plot(
        steps,
        [v if v is not None and not math.isnan(v) else None for v in history["val_loss"]],
        alpha=0.5,
        label="validation loss",
    )
    loss_axis.set_ylabel("loss")
    axes[0].legend(loc="upper left", fontsize=7)
    loss_axis.legend(loc="upper right", fontsize=7)
    _encodings(axes[1], history, [c for c in space.hparams if len(c) > 1], all_candidates=True)
    axes[1].set_title("hyper-parameter encoding P^H", fontsize=9)
    _encodings(axes[2], history, [c for c in space.arch if len(c) > 1], all_candidates=False)
    axes[2].set_title("architecture encoding P^A (probability of the final choice)", fontsize=9)
    axes[2].set_xlabel("search step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


_STYLES = ("-", "--", ":", "-.")


def matplotlib_colors() -> list[str]:
    """The default matplotlib colour cycle."""
    import matplotlib.pyplot as plt

    colors: list[str] = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return colors


def _encodings(ax: Any, history: dict[str, Any], choices: list, all_candidates: bool) -> None:
    encodings = history["encodings"]
    if not choices or not encodings:
        ax.text(0.5, 0.5, "fixed in this mode", ha="center", va="center", transform=ax.transAxes)
        return
    colors = matplotlib_colors()
    for c, choice in enumerate(choices):
        series = [e[choice.name] for e in encodings]
        final = series[-1]
        picks = (
            range(len(choice))
            if all_candidates
            else [max(range(len(final)), key=final.__getitem__)]
        )
        for i in picks:
            # one colour per choice; candidates (or choices past the palette) differ by line style
            style = _STYLES[(i if all_candidates else c // len(colors)) % len(_STYLES)]
            ax.plot(
                [s[i] for s in series],
                color=colors[c % len(colors)],
                linestyle=style,
                linewidth=1,
                label=f"{choice.name}={choice.labels[i]}",
            )
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(fontsize=6, ncol=3, loc="upper left")

"""The demo's report: a Markdown summary plus PNG plots (encodings over the search, per-user accuracy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


@dataclass
class UserOutcome:
    """One simulated user's part in the demo."""

    user_id: str
    app_id: str
    consented: bool
    revoked: bool = False
    uploaded: int = 0
    used_by_job: int = 0
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    fine_tune_seconds: float | None = None
    kept_previous: bool = False


@dataclass
class EncodingHistory:
    """Encodings seen while watching the search: step -> choice -> candidate -> probability."""

    steps: list[int] = field(default_factory=list)
    values: list[Mapping[str, Mapping[str, float]]] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)

    def add(
        self, step: int, encodings: Mapping[str, Mapping[str, float]], learning_rate: float
    ) -> None:
        """Record one progress event."""
        self.steps.append(step)
        self.values.append(encodings)
        self.learning_rates.append(learning_rate)


def plot_encodings(history: EncodingHistory, path: Path) -> None:
    """One small panel per searched choice: each candidate's probability over the search steps."""
    if not history.values:
        return
    choices = sorted(history.values[-1])
    cols = 4
    rows = (len(choices) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, choice in zip(axes.flat, choices, strict=False):
        for candidate in history.values[-1][choice]:
            ys = [v.get(choice, {}).get(candidate, float("nan")) for v in history.values]
            ax.plot(history.steps, ys, label=str(candidate))
        ax.set_title(choice, fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="upper left")
    lr_ax = axes.flat[len(choices)]
    lr_ax.plot(history.steps, history.learning_rates, color="black")
    lr_ax.set_title("combined learning rate (searched schedule)", fontsize=9)
    for ax in list(axes.flat)[len(choices) + 1 :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_user_accuracy(outcomes: Sequence[UserOutcome], path: Path) -> None:
    """Bars of each user's held-out accuracy with the global model and after local fine-tuning."""
    # both measured (a bar of None would make matplotlib raise)
    rows = [
        (o.user_id, o.accuracy_before, o.accuracy_after)
        for o in outcomes
        if o.accuracy_before is not None and o.accuracy_after is not None
    ]
    if not rows:
        return
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(rows)), 3.5))
    ax.bar(
        [x - 0.2 for x in xs], [before for _, before, _ in rows], width=0.4, label="global model"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [after for _, _, after in rows],
        width=0.4,
        label="after fine-tuning",
    )
    ax.set_xticks(list(xs), [user for user, _, _ in rows], rotation=60, fontsize=7)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("per user, before and after on-device fine-tuning", fontsize=9, loc="left")
    # above the axes, so no bar hides behind it
    ax.legend(fontsize=8, ncols=2, loc="lower right", bbox_to_anchor=(1.0, 1.06), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

"""What a running search reports (`ProgressEvent`) and how it stops early (`SearchCancelled`).

torch-free, so the server process and the multi-worker launcher can handle them without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


class SearchCancelled(Exception):
    """Raised when `should_stop()` returned True; the search checkpoint is saved first."""


@dataclass
class ProgressEvent:
    """One progress report: stage `load|search|race|retrain|evaluate|done` and the current figures."""

    stage: str
    step: int = 0
    total_steps: int = 0
    train_loss: float = math.nan
    val_loss: float = math.nan
    learning_rate: float = math.nan
    encodings: dict[str, dict[str, float]] = field(default_factory=dict)


Progress = Callable[[ProgressEvent], None]
StopCheck = Callable[[], bool]

"""Helpers for the export tests: a tiny §4 model for failure cases and manifest edits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FINE_TUNING = {
    "learning_rate": 0.01,
    "weight_decay": 0.0,
    "epochs": 2,
    "batch_size": 8,
    "label_smoothing": 0.0,
    "optimizer": "sgd",
}


class ToyNet(nn.Module):
    """The smallest model meeting docs/architecture.md §4: normalise, conv, pool, linear head."""

    def __init__(self, noisy: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)  # the same weights in every test
        self.register_buffer("mean", torch.full((1, 1, 1), 0.1))
        self.body = nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU())
        self.classifier = nn.Linear(8, 3)
        self.noisy = noisy

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x - self.mean).mean(-1)
        # A model that changes when traced: what an exporter mistranslating an op looks like.
        return h + 1.0 if self.noisy and torch.compiler.is_exporting() else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def toy_result() -> dict[str, Any]:
    """A result.json for ToyNet."""
    return {
        "dataset": {
            "name": "toy",
            "input_shape": [1, 12],
            "num_classes": 3,
            "label_names": ["a", "b", "c"],
        },
        "fine_tuning": dict(FINE_TUNING),
        "architecture": {"family": "toy"},
        "hyperparameters": {},
    }


def toy_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs shaped for ToyNet and labels."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 1, 12)).astype(np.float32), rng.integers(0, 3, n)


def manifest_of(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest.json."""
    return json.loads((bundle / "manifest.json").read_text())

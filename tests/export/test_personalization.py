"""What export writes for on-device personalisation: the input statistics and `trainable`."""

from __future__ import annotations

import torch

from autohas_edge.export.train_step import fine_tuning_hyperparameters, input_statistics


class _Normalised(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("norm_mean", torch.tensor([[[0.5]], [[-1.0]]]).reshape(1, 2, 1))
        self.register_buffer("norm_std", torch.tensor([2.0, 0.25]).reshape(1, 2, 1))


def test_the_statistics_are_the_models_normalisation_buffers() -> None:
    stats = input_statistics(_Normalised())
    assert stats is not None and stats["mean"] == [0.5, -1.0] and stats["std"] == [2.0, 0.25]
    assert input_statistics(torch.nn.Linear(2, 2)) is None  # no buffers: nothing to align to


def test_input_and_head_is_the_default_only_with_statistics() -> None:
    hp = {"learning_rate": 0.1, "optimizer": "sgd"}
    stats = input_statistics(_Normalised())
    assert fine_tuning_hyperparameters(hp, stats) == {**hp, "trainable": "input+head"}
    assert fine_tuning_hyperparameters(hp, None) == {**hp, "trainable": "head"}

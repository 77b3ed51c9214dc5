"""Batch-norm statistics re-estimated on the finished weights: what they are, what they leave alone,
and that a short training is judged by them (with the moving averages it sits at chance)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import autohas_edge.server.search.retraining as retraining
from autohas_edge.server.search.batchnorm import EXAMPLES, recalibrate, spaced_batches
from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.models import LAYOUTS, build_model, model_args_for
from autohas_edge.server.search.retraining import accuracy, retrain

HPARAMS = {
    "optimizer": "sgd",
    "learning_rate": 0.4,
    "weight_decay": 0.0,
    "loss": "ce",
    "augment": "shift",
}


def _signals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 1-channel signals: a bump at one of three places, offset far from zero (so
    the initial running statistics, mean 0 and variance 1, are far from the true ones)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    t = torch.arange(32, dtype=torch.float32)
    bumps = torch.stack([torch.exp(-((t - c) ** 2) / 8) for c in (6.0, 16.0, 26.0)])
    x = 5.0 + 4.0 * bumps[y] + 0.3 * torch.randn(n, 32, generator=gen)
    return x[:, None, :], y


def _model() -> nn.Module:
    arch = {c.name: c.candidates[0] for c in default_space(LAYOUTS["conv1d"], "signal", "nas").arch}
    torch.manual_seed(0)
    return build_model(model_args_for(LAYOUTS["conv1d"], (1, 32), 3, arch))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    retrain(model, x, y, HPARAMS, steps, 64, 1.0, torch.Generator().manual_seed(0), 5.0)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_spaced_batches_are_evenly_spaced_rows_at_the_training_batch_size() -> None:
    x = torch.arange(2000, dtype=torch.float32)[:, None]
    batches = spaced_batches(x, 128)
    rows = torch.cat(batches)
    assert len(rows) == EXAMPLES and [len(b) for b in batches] == [128] * (EXAMPLES // 128)
    assert rows[0, 0] == 0 and rows[-1, 0] == 1999
    assert bool((rows[1:, 0] > rows[:-1, 0]).all())  # distinct, in order
    # fewer rows than EXAMPLES: all of them; a trailing batch of one is left out
    assert [len(b) for b in spaced_batches(x[:129], 64)] == [64, 64]
    assert spaced_batches(x[:1], 64) == []


def test_running_statistics_become_those_of_the_final_weights() -> None:
    x, y = _signals(600, 0)
    model = _model()
    _train(model, x, y, 15)
    first = _bn_layers(model)[0]
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    model.train()
    with torch.no_grad():
        # what `retrain` re-estimates from: spaced rows under the training's augmentation
        for xb in retraining._augmented(spaced_batches(x, 64), HPARAMS["augment"], 1.0):
            model(xb)
    hook.remove()
    # equal batches here (512 = 8 x 64): the cumulative average of the batch means is their mean
    assert all(len(s) == 64 for s in seen)
    expected = torch.cat(seen).mean(dim=(0, 2))
    torch.testing.assert_close(first.running_mean, expected, rtol=1e-3, atol=1e-4)
    # unaugmented rows would give other statistics: the augmentation is part of what is matched
    seen.clear()
    hook = first.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    with torch.no_grad():
        for xb in spaced_batches(x, 64):
            model(xb)
    hook.remove()
    plain = torch.cat(seen).mean(dim=(0, 2))
    assert float((plain - expected).abs().max()) > 1e-2
    after = {k: v for k, v in model.state_dict().items() if "running" not in k}
    for name, value in weights.items():  # the weights did not move (num_batches_tracked aside)
        if "num_batches" not in name:
            torch.testing.assert_close(after[name], value)


def test_recalibrate_restores_momentum_and_mode_and_skips_what_it_cannot_do() -> None:
    model = _model()
    layers = _bn_layers(model)
    layers[0].momentum = 0.3
    model.eval()
    x, _ = _signals(100, 1)
    before = layers[0].running_mean.clone()
    assert recalibrate(model, []) is False  # no batches: the statistics stay as they were
    torch.testing.assert_close(layers[0].running_mean, before)
    assert recalibrate(model, spaced_batches(x, 50)) is True
    assert not model.training and layers[0].momentum == 0.3
    assert layers[1].momentum == 0.1
    assert not torch.equal(layers[0].running_mean, before)
    assert recalibrate(nn.Linear(3, 2), [torch.zeros(4, 3)]) is False


def test_a_short_training_is_judged_by_the_statistics_of_its_final_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ten steps: with the moving averages (most of their weight still on mean 0 / variance 1 and
    on the first steps' weights) the model predicts one class; re-estimated, it separates the three."""
    x, y = _signals(600, 0)
    x_val, y_val = _signals(300, 1)
    model = _model()
    _train(model, x, y, 10)
    assert accuracy(model, x_val, y_val) > 0.8
    # the control: the same training with the re-estimation turned off
    monkeypatch.setattr(retraining, "recalibrate", lambda *_a, **_k: False)
    stale = _model()
    _train(stale, x, y, 10)
    assert accuracy(stale, x_val, y_val) < 0.5

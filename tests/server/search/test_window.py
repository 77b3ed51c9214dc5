"""The windowed (K-step) hyper-parameter signal: its algebra, its horizon, and its place in a search."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from autohas_edge.server.search import SearchConfig, run_search
from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.engine import Batches, Searcher
from autohas_edge.server.search.iterations import HPMix, combine_fast
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace
from autohas_edge.server.search.supernet import SuperNet
from autohas_edge.server.search.window import (
    Window,
    advance,
    bases,
    window_weights,
    window_weights_explicit,
)

from .test_iterations import LAYOUT, SPACE

#: two loss bases whose gradients do not depend on W (a linear training loss): "ce" pulls towards the
#: target along e1 on the first step and away from it afterwards; "ls0.1" pushes slightly away along
#: e2 first and then pulls towards the target. One step ahead "ce" looks better; over 8 steps it is not.
TARGET = torch.tensor([1.0, 1.0], dtype=torch.float64)
TOY = SearchSpace(
    (),
    (
        Choice("learning_rate", (0.1,), CONTINUOUS),
        Choice("weight_decay", (0.0,), CONTINUOUS),
        Choice("optimizer", ("sgd",)),
        Choice("loss", ("ce", "ls0.1")),
        Choice("augment", ("none",)),
    ),
)


def _toy_grads(k: int) -> dict[tuple[str, int], torch.Tensor]:
    e1, e2 = torch.eye(2, dtype=torch.float64)
    return {("ce", 0): -e1 if k == 0 else e1, ("ls0.1", 0): 0.2 * e2 if k == 0 else -e2}


def _val_loss(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((w - TARGET) ** 2).sum()


def _logits() -> dict[str, torch.Tensor]:
    return {
        c.name: torch.zeros(len(c), dtype=torch.float64, requires_grad=True) for c in TOY.choices
    }


def _loss_encoding_gradient(horizon: int) -> torch.Tensor:
    """d validation loss / d loss-basis logits after a window of `horizon` steps (0: the one-step
    form, one temporary step from W)."""
    logits = _logits()
    mix = HPMix.from_probs(TOY, {k: torch.softmax(v, 0) for k, v in logits.items()})
    w = torch.zeros(2, dtype=torch.float64)
    state = hp.init_state(["sgd"], w)
    if horizon == 0:
        w_prime = combine_fast(w, _toy_grads(0), state, mix)
    else:
        window = Window.open(w, bases(TOY))
        for k in range(horizon):
            w = advance(window, w, _toy_grads(k), state, mix)
        w_prime = window_weights(window, mix)
        torch.testing.assert_close(w_prime, w)  # its value is where the first iterations went
    _val_loss(w_prime).backward()
    grad = logits["loss"].grad
    assert grad is not None
    return grad


def _trained_with(loss: str, steps: int) -> float:
    """Validation loss after `steps` steps with one loss basis alone (the ground truth)."""
    w = torch.zeros(2, dtype=torch.float64)
    state = hp.init_state(["sgd"], w)
    for k in range(steps):
        d, new = hp.direction("sgd", _toy_grads(k)[(loss, 0)], state)
        hp.commit(state, [new])
        w = w - 0.1 * d
    return float(_val_loss(w))


def test_one_step_ahead_picks_the_wrong_basis_and_eight_steps_the_right_one() -> None:
    # ground truth: one step favours "ce", a training of 8 steps favours "ls0.1"
    assert _trained_with("ce", 1) < _trained_with("ls0.1", 1)
    assert _trained_with("ls0.1", 8) < _trained_with("ce", 8)
    one_step = _loss_encoding_gradient(0)
    assert one_step[0] < 0 < one_step[1]  # descending it raises P("ce")
    window = _loss_encoding_gradient(8)
    assert window[1] < 0 < window[0]  # descending it raises P("ls0.1")
    # a window of one step is the one-step form
    torch.testing.assert_close(_loss_encoding_gradient(1), one_step)


def _window_after(steps: int, seed: int = 0) -> tuple[Window, HPMix, dict[str, torch.Tensor]]:
    """A window of `steps` random-gradient steps over SPACE's full hyper-parameter product."""
    gen = torch.Generator().manual_seed(seed)
    logits = {
        c.name: torch.randn(len(c), generator=gen, dtype=torch.float64).requires_grad_()
        for c in SPACE.hparams
    }
    mix = HPMix.from_probs(SPACE, {k: torch.softmax(v, 0) for k, v in logits.items()})
    w = torch.randn(20, generator=gen, dtype=torch.float64)
    state = hp.init_state(SPACE.hparam("optimizer").labels, w)
    window = Window.open(w, bases(SPACE))
    losses, n_aug = SPACE.hparam("loss").labels, len(SPACE.hparam("augment").candidates)
    for _ in range(steps):
        grads = {
            (loss, a): torch.randn(20, generator=gen, dtype=torch.float64)
            for loss in losses
            for a in range(n_aug)
        }
        w = advance(window, w, grads, state, mix)
    return window, mix, logits


def test_window_closed_form_equals_every_basis_set_combined_in_value_and_gradient() -> None:
    window, mix, logits = _window_after(5)
    fast = window_weights(window, mix)
    explicit, each = window_weights_explicit(window, SPACE, mix)
    assert len(each) == 2 * 2 * 3 * 2 * 2  # lr x wd x optimizer x loss x augmentation
    torch.testing.assert_close(fast, explicit, rtol=1e-9, atol=1e-10)
    target = torch.linspace(-1, 1, 20, dtype=torch.float64)
    d_fast = torch.autograd.grad(
        ((fast - target) ** 2).sum(), list(logits.values()), retain_graph=True
    )
    d_explicit = torch.autograd.grad(((explicit - target) ** 2).sum(), list(logits.values()))
    for a, b in zip(d_fast, d_explicit, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_a_window_survives_its_state_dict() -> None:
    window, mix, _ = _window_after(3)
    buffer = io.BytesIO()
    torch.save(window.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    again = Window.from_state(state, torch.device("cpu"))
    assert again.steps == 3 and list(again.directions) == list(window.directions)
    torch.testing.assert_close(window_weights(again, mix), window_weights(window, mix))


def _searcher(config: SearchConfig) -> Searcher:
    torch.manual_seed(0)
    net = SuperNet(LAYOUT, SPACE.arch, (1, 12), 3)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 12, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    return Searcher(net, SPACE, Batches(x[:48], y[:48], x[48:], y[48:], 1.0, gen), config)


def test_the_encodings_move_once_per_window_after_warm_up() -> None:
    config = SearchConfig(steps=24, warmup_fraction=0.25, horizon=4, batch_size=16)
    searcher = _searcher(config)
    moved = []
    for _ in range(config.steps):
        before = {k: v.detach().clone() for k, v in searcher.logits.items()}
        stats = searcher.step()
        changed = any(not torch.equal(before[k], v) for k, v in searcher.logits.items())
        moved.append(changed)
        assert changed == (stats.val_loss == stats.val_loss)  # a validation loss only then
    # warm-up 6 steps, then windows of 4: updates after steps 10, 14, 18 and 22 (1-based)
    assert [i + 1 for i, m in enumerate(moved) if m] == [10, 14, 18, 22]


def test_a_short_search_shortens_its_window_to_a_quarter_of_its_alternating_steps() -> None:
    assert SearchConfig(steps=300, horizon=8).window_steps == 8
    assert SearchConfig(steps=24, warmup_fraction=0.25, horizon=8).window_steps == 4
    assert SearchConfig(steps=6, horizon=8).window_steps == 1
    assert SearchConfig(steps=300, hp_signal="one-step").window_steps == 0


@pytest.mark.parametrize("hp_signal", ["window", "one-step"])
def test_both_signals_run_a_search_end_to_end(
    tmp_path: Path, toy_signal_npz: Path, hp_signal: str
) -> None:
    config = SearchConfig(
        dataset=str(toy_signal_npz),
        steps=12,
        horizon=3,
        hp_signal=hp_signal,
        batch_size=16,
        encoding_batch_size=16,
        retrain_steps=2,
        device="cpu",
        plot=False,
    )
    result = run_search(config, tmp_path)
    assert result["search_steps"] == 12
    moved = max(abs(p - 1 / 3) for p in result["encodings"]["optimizer"].values())
    assert moved > 1e-4


def test_a_bad_signal_or_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="hp_signal"):
        SearchConfig(hp_signal="two-step")
    with pytest.raises(ValueError, match="horizon"):
        SearchConfig(horizon=0)


def test_the_derived_learning_rate_is_the_searched_schedules_peak_unless_asked_otherwise() -> None:
    from autohas_edge.server.search.derive import derive_learning_rate

    trajectory = [0.2, 0.2, 0.3, 0.25, 0.12]  # warm-up of 2, then a rise and an anneal
    assert derive_learning_rate(0.12, trajectory, 2, "peak") == 0.3
    assert derive_learning_rate(0.12, trajectory, 2, "encoding") == 0.12
    # a fixed rate, recorded in float32, keeps its exact value; no alternating steps: the encoding
    assert derive_learning_rate(0.1, [0.10000000149011612] * 4, 1, "peak") == 0.1
    assert derive_learning_rate(0.1, [0.2, 0.2], 2, "peak") == 0.1
    with pytest.raises(ValueError, match="lr_derivation"):
        SearchConfig(lr_derivation="median")

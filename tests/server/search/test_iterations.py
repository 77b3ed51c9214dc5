"""The claim steps of the alternating loop, one test each, on a tiny SuperModel."""

from __future__ import annotations

import itertools

import pytest
import torch

from autohas_edge.server.search import SearchConfig
from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.defaults import arch_choices
from autohas_edge.server.search.engine import Batches, Searcher, cost_penalty
from autohas_edge.server.search.iterations import (
    HPMix,
    augmented_chunks,
    chunk_gradients,
    combine_explicit,
    combine_fast,
    first_iteration,
    validation_objective,
)
from autohas_edge.server.search.models import BlockSpec, Layout
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace
from autohas_edge.server.search.supernet import SuperNet
from autohas_edge.server.search.weights import FlatWeights, forward_with

LAYOUT = Layout("conv1d", 4, 3, 1, (BlockSpec(4, 4), BlockSpec(4, 6, 2)))
HPARAMS = (
    Choice("learning_rate", (0.5, 0.05), CONTINUOUS),
    Choice("weight_decay", (1e-2, 1e-4), CONTINUOUS),
    Choice("optimizer", ("sgd", "adam", "rmsprop")),
    Choice("loss", ("ce", "ls0.2")),
    Choice("augment", ("none", "shift_noise")),
)
SPACE = SearchSpace(arch_choices(LAYOUT, fixed=False), HPARAMS)


def _searcher(seed: int = 0, warmup: float = 0.0) -> Searcher:
    torch.manual_seed(seed)
    net = SuperNet(LAYOUT, SPACE.arch, (1, 12), 3)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 1, 12, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    batches = Batches(x[:48], y[:48], x[48:], y[48:], 1.0, gen)
    config = SearchConfig(steps=10, warmup_fraction=warmup, batch_size=16, grad_clip=0.0)
    searcher = Searcher(net, SPACE, batches, config)
    with torch.no_grad():  # non-uniform encodings, so agreement is not an accident of symmetry
        for logits in searcher.logits.values():
            logits.copy_(torch.randn(logits.shape, generator=gen))
    searcher.step()  # optimizer state is non-trivial from here on
    return searcher


def _setup(searcher: Searcher) -> tuple:
    probs = searcher.probabilities()
    arch = {c.name: probs[c.name] for c in SPACE.arch}
    chunks = augmented_chunks(
        *searcher.batches.train(16), ("none", "shift_noise"), 1.0, torch.Generator().manual_seed(7)
    )
    return probs, arch, HPMix.from_probs(SPACE, probs), chunks


def test_first_iteration_updates_w_with_encoding_combined_hparams() -> None:
    s = _searcher()
    _, arch, mix, chunks = _setup(s)
    w, state = s.flat.get(), {k: v.clone() for k, v in s.opt_state.items()}
    # the expected update, computed independently: g of sum_a P_a mean_{chunk a}(sum_l P_l loss_l), from
    # one forward of the whole batch (each augmentation basis acts on its own chunk)
    x, y = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
    ce, uniform = hp.per_example_losses(forward_with(s.net, s.flat, None, x, arch), y)
    per_example = sum(p_l * hp.basis_loss(ce, uniform, name) for name, p_l in mix.loss.items())
    total, start = 0.0, 0
    for p_a, (_, y_a) in zip(mix.augment.values(), chunks, strict=True):
        total = total + p_a * per_example[start : start + len(y_a)].mean()
        start += len(y_a)
    g = s.flat.flat_grad(total).detach()
    update = sum(p * hp.direction(o, g, state)[0] for o, p in mix.optimizer.items())
    expected = w - mix.lr * update - mix.lr * mix.wd * w
    logits_before = {k: v.detach().clone() for k, v in s.logits.items()}
    first_iteration(s.net, s.flat, s.opt_state, chunks, arch, mix, grad_clip=0.0)
    torch.testing.assert_close(s.flat.get(), expected.detach(), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(s.logits[k], v) for k, v in logits_before.items())  # encodings unchanged
    assert float(s.opt_state["step"]) == float(state["step"]) + 1


def test_first_iterations_leave_encodings_unchanged_during_warmup() -> None:
    s = _searcher(warmup=0.9)
    before = {k: v.detach().clone() for k, v in s.logits.items()}
    w = s.flat.get()
    s.step()
    assert all(torch.equal(s.logits[k], v) for k, v in before.items())
    assert not torch.equal(s.flat.get(), w)


def test_second_iteration_leaves_w_unchanged_and_moves_encodings() -> None:
    s = _searcher()
    w = s.flat.get()
    buffers = {k: v.clone() for k, v in s.net.state_dict().items()}
    state = {k: v.clone() for k, v in s.opt_state.items()}
    before = {k: v.detach().clone() for k, v in s.logits.items()}
    s.second_iteration()
    assert torch.equal(s.flat.get(), w)
    assert all(torch.equal(v, buffers[k]) for k, v in s.net.state_dict().items())
    assert all(torch.equal(v, state[k]) for k, v in s.opt_state.items())
    moved = [k for k, v in before.items() if not torch.equal(s.logits[k], v)]
    assert set(moved) == {c.name for c in SPACE.choices}


def test_combined_weights_are_the_encoding_weighted_sum_of_one_step_temporary_weights() -> None:
    s = _searcher()
    probs, arch, mix, chunks = _setup(s)
    combined, bases = combine_explicit(
        s.net, s.flat, chunks, arch, s.opt_state, SPACE, mix, grad_clip=0.0
    )
    w = s.flat.get()
    product = list(itertools.product(range(2), range(2), range(3), range(2), range(2)))
    assert len(bases) == len(product) == 48
    expected = torch.zeros_like(w)
    for (i, j, o, k, a), w_b in zip(product, bases, strict=True):
        lr, wd = HPARAMS[0].candidates[i], HPARAMS[1].candidates[j]
        x, y = chunks[a]
        ce, uniform = hp.per_example_losses(forward_with(s.net, s.flat, None, x, arch), y)
        g = s.flat.flat_grad(hp.basis_loss(ce, uniform, HPARAMS[3].candidates[k]).mean())
        d, _ = hp.direction(HPARAMS[2].candidates[o], g, s.opt_state)
        torch.testing.assert_close(
            w_b, w - lr * d - lr * wd * w
        )  # one gradient step from W (claim 10)
        p_b = (
            probs["learning_rate"][i]
            * probs["weight_decay"][j]
            * probs["optimizer"][o]
            * probs["loss"][k]
            * probs["augment"][a]
        )
        expected = expected + p_b * w_b
    torch.testing.assert_close(combined, expected)


@pytest.fixture
def float64() -> object:
    """Run in double precision: Adam and RMSprop divide by sqrt(v), which amplifies float32 rounding of
    near-zero gradients; the two paths are the same algebra, so in float64 they agree to ~1e-10."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_fast_path_equals_explicit_path_in_value_and_gradient(float64: object) -> None:
    s = _searcher()
    _, arch, mix, chunks = _setup(s)
    x_val, y_val = s.batches.val(16)
    explicit, _ = combine_explicit(
        s.net, s.flat, chunks, arch, s.opt_state, SPACE, mix, grad_clip=0.0
    )
    grads, _ = chunk_gradients(s.net, s.flat, chunks, arch, ["ce", "ls0.2"], grad_clip=0.0)
    fast = combine_fast(s.flat.get(), grads, s.opt_state, mix)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, explicit, rtol=1e-9, atol=1e-10)
    logits = list(s.logits.values())
    d_fast = torch.autograd.grad(
        validation_objective(s.net, s.flat, fast, x_val, y_val, arch), logits, retain_graph=True
    )
    d_explicit = torch.autograd.grad(
        validation_objective(s.net, s.flat, explicit, x_val, y_val, arch), logits
    )
    for a, b in zip(d_fast, d_explicit, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_validation_loss_has_nonzero_gradients_for_both_encodings() -> None:
    s = _searcher()
    _, arch, mix, chunks = _setup(s)
    grads, _ = chunk_gradients(s.net, s.flat, chunks, arch, ["ce", "ls0.2"], grad_clip=0.0)
    w_prime = combine_fast(s.flat.get(), grads, s.opt_state, mix)
    loss = validation_objective(s.net, s.flat, w_prime, *s.batches.val(16), arch)
    names = list(s.logits)
    d = dict(zip(names, torch.autograd.grad(loss, list(s.logits.values())), strict=True))
    for choice in SPACE.arch:
        assert d[choice.name].abs().sum() > 0, choice.name
    for choice in SPACE.hparams:
        assert d[choice.name].abs().sum() > 0, choice.name


def test_resource_penalty_pushes_towards_smaller_candidates_only_above_budget() -> None:
    s = _searcher()
    probs = s.probabilities()
    names = [c.name for c in SPACE.arch]
    expected = s.net.expected_params({n: probs[n] for n in names})
    assert float(cost_penalty(expected, 10**9).detach()) == 0.0
    penalty = cost_penalty(expected, int(expected.detach()) // 2)
    assert float(penalty.detach()) == pytest.approx(
        float(expected.detach()) / (int(expected.detach()) // 2) - 1
    )
    grads = dict(
        zip(names, torch.autograd.grad(penalty, [s.logits[n] for n in names]), strict=True)
    )
    expansion = grads["b1.expansion"]  # candidates (1, 3, 6): the cost rises with the expansion
    assert expansion[0] < expansion[1] < expansion[2]


@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_direction_is_pure(opt: str) -> None:
    g = torch.randn(10)
    state = hp.init_state([opt], g)
    copy = {k: v.clone() for k, v in state.items()}
    d1, new = hp.direction(opt, g, state)
    d2, _ = hp.direction(opt, g, state)
    assert torch.equal(d1, d2) and all(torch.equal(state[k], copy[k]) for k in state)
    hp.commit(state, [new])
    assert float(state["step"]) == 1.0


def test_flat_weights_round_trip() -> None:
    net = SuperNet(LAYOUT, SPACE.arch, (1, 12), 3)
    flat = FlatWeights(net)
    w = flat.get()
    flat.set(w * 2)
    torch.testing.assert_close(flat.get(), w * 2)


def test_augmentation_bases_see_the_same_examples_or_a_part_each() -> None:
    x = torch.arange(24, dtype=torch.float32).reshape(12, 1, 2)
    y = torch.arange(12)
    policies = ("none", "shift_noise", "none")
    same = augmented_chunks(x, y, policies, 1.0, torch.Generator().manual_seed(0), same=True)
    assert [len(c[1]) for c in same] == [4, 4, 4]
    assert all(torch.equal(c[1], y[:4]) for c in same)  # the same examples, whatever the basis
    assert torch.equal(same[0][0], x[:4]) and torch.equal(same[2][0], x[:4])
    assert not torch.equal(same[1][0], x[:4])  # the middle basis augments them
    split = augmented_chunks(x, y, policies, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([c[1] for c in split]), y)  # every example once

"""The SuperModel's weight sharing and the derived model's contract (docs/architecture.md §4)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.models import LAYOUTS, build_model, count_params, model_args_for
from autohas_edge.server.search.space import Choice
from autohas_edge.server.search.supernet import SubModel, SuperNet, child_state_dict

SHAPES = {"conv1d": (1, 40), "conv2d": (1, 8, 8), "mlp": (6,)}
MODALITY = {"conv1d": "signal", "conv2d": "image", "mlp": "tabular"}


def _random_arch(family: str, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    space = default_space(LAYOUTS[family], MODALITY[family], "joint")
    arch = {c.name: rng.choice(c.candidates) for c in space.arch}
    return space, arch


def _one_hot(space, arch: dict) -> dict[str, torch.Tensor]:
    return {
        c.name: torch.tensor([float(v == arch[c.name]) for v in c.candidates]) for c in space.arch
    }


def _randomise_bn(net: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize("family", ["conv1d", "conv2d", "mlp"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_candidate_is_a_sub_model_of_the_supernet(family: str, seed: int) -> None:
    space, arch = _random_arch(family, seed)
    torch.manual_seed(seed)
    net = SuperNet(LAYOUTS[family], space.arch, SHAPES[family], 10)
    _randomise_bn(net)
    args = model_args_for(LAYOUTS[family], SHAPES[family], 10, arch)
    child = build_model(args)
    child.load_state_dict(child_state_dict(net, arch, args))
    x = torch.randn(7, *SHAPES[family]) * 3
    for train in (False, True):
        net.train(train)
        child.train(train)
        torch.testing.assert_close(net(x, _one_hot(space, arch)), child(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["conv1d", "conv2d", "mlp"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_sampled_sub_model_computes_what_its_one_hot_mixture_computes(
    family: str, seed: int
) -> None:
    """The controller's sliced path: same outputs, same gradients, same running statistics."""
    space, arch = _random_arch(family, seed)
    picks = SubModel({c.name: list(c.candidates).index(arch[c.name]) for c in space.arch})
    torch.manual_seed(seed)
    mixed = SuperNet(LAYOUTS[family], space.arch, SHAPES[family], 10)
    _randomise_bn(mixed)
    sliced = SuperNet(LAYOUTS[family], space.arch, SHAPES[family], 10)
    sliced.load_state_dict(mixed.state_dict())
    x = torch.randn(7, *SHAPES[family]) * 3
    for train in (True, False):
        mixed.train(train)
        sliced.train(train)
        mixed.zero_grad()
        sliced.zero_grad()
        out_mixed, out_sliced = mixed(x, _one_hot(space, arch)), sliced(x, picks)
        torch.testing.assert_close(out_sliced, out_mixed, rtol=1e-4, atol=1e-5)
        out_mixed.square().sum().backward()
        out_sliced.square().sum().backward()
        for (name, a), b in zip(mixed.named_parameters(), sliced.parameters(), strict=True):
            torch.testing.assert_close(
                b.grad if b.grad is not None else torch.zeros_like(a),
                a.grad,
                rtol=1e-4,
                atol=1e-5,
                msg=name,
            )
    args = model_args_for(LAYOUTS[family], SHAPES[family], 10, arch)
    mixed_child, sliced_child = (
        child_state_dict(mixed, arch, args),
        child_state_dict(sliced, arch, args),
    )
    for name, value in mixed_child.items():  # the sub-model's own running statistics moved alike
        torch.testing.assert_close(sliced_child[name], value, msg=name)


@pytest.mark.parametrize("family", ["conv1d", "conv2d", "mlp"])
def test_param_count_and_expected_cost_agree_with_the_built_model(family: str) -> None:
    for seed in range(4):
        space, arch = _random_arch(family, seed)
        args = model_args_for(LAYOUTS[family], SHAPES[family], 10, arch)
        built = sum(p.numel() for p in build_model(args).parameters())
        assert count_params(args) == built
        net = SuperNet(LAYOUTS[family], space.arch, SHAPES[family], 10)
        assert float(net.expected_params(_one_hot(space, arch))) == pytest.approx(built)


def test_expected_cost_is_the_mean_over_candidates() -> None:
    space = default_space(LAYOUTS["conv1d"], "signal", "joint")
    net = SuperNet(LAYOUTS["conv1d"], space.arch, (1, 40), 10)
    uniform = {c.name: torch.full((len(c),), 1.0 / len(c)) for c in space.arch}
    rng = random.Random(0)
    samples = []
    for _ in range(3000):
        arch = {c.name: rng.choice(c.candidates) for c in space.arch}
        samples.append(count_params(model_args_for(LAYOUTS["conv1d"], (1, 40), 10, arch)))
    assert float(net.expected_params(uniform)) == pytest.approx(
        sum(samples) / len(samples), rel=0.02
    )


@pytest.mark.parametrize("family", ["conv1d", "conv2d", "mlp"])
def test_derived_model_contract(family: str) -> None:
    _, arch = _random_arch(family, 5)
    model = build_model(model_args_for(LAYOUTS[family], SHAPES[family], 4, arch)).eval()
    assert isinstance(model.classifier, nn.Linear)
    assert {"norm_mean", "norm_std"} <= {name for name, _ in model.named_buffers()}
    x = torch.randn(5, *SHAPES[family])
    features = model.features(x)
    assert features.shape == (5, model.classifier.in_features)
    torch.testing.assert_close(model(x), model.classifier(features))
    types = {type(m) for m in model.modules()}
    allowed = {
        nn.Conv1d,
        nn.Conv2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.ReLU6,
        nn.Linear,
        nn.Sequential,
    }
    assert types - allowed <= {type(model), *(type(b) for b in model.blocks)}


def test_derived_model_exports_without_data_dependent_control_flow() -> None:
    _, arch = _random_arch("conv1d", 0)
    model = build_model(model_args_for(LAYOUTS["conv1d"], (1, 40), 10, arch)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    x = torch.randn(3, 1, 40)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=False)
    torch.testing.assert_close(exported.module()(x), model(x))


def test_a_fixed_skip_is_skipped_in_the_mixture_the_sub_model_and_the_cost() -> None:
    """A one-candidate ("skip",) depth choice (a fixed architecture with skipped blocks)."""
    layout = LAYOUTS["conv1d"]
    arch = []
    for j, spec in enumerate(layout.blocks):
        arch += [Choice(f"b{j}.kernel", (5,)), Choice(f"b{j}.expansion", (3,))]
        if spec.residual:
            arch.append(Choice(f"b{j}.depth", ("skip",)))
    torch.manual_seed(0)
    net = SuperNet(layout, tuple(arch), (1, 40), 10).eval()
    values = {c.name: c.candidates[0] for c in arch}
    args = model_args_for(layout, (1, 40), 10, values)
    assert len(args["blocks"]) == 2  # the three residual blocks are skipped
    child = build_model(args).eval()
    child.load_state_dict(child_state_dict(net, values, args))
    x = torch.randn(4, 1, 40)
    ones = {c.name: torch.ones(1) for c in arch}
    torch.testing.assert_close(net(x, ones), child(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net(x, SubModel({c.name: 0 for c in arch})), child(x))
    assert float(net.expected_params(ones)) == count_params(args)

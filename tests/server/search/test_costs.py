"""FLOPs and latency: counted and measured costs, their expectations, and budgets the derived model
meets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from autohas_edge.server.search import (
    LAYOUTS,
    SearchConfig,
    build_model,
    count_flops,
    default_space,
    model_args_for,
    run_search,
)
from autohas_edge.server.search import latency as lat
from autohas_edge.server.search.defaults import hparam_choices
from autohas_edge.server.search.space import Choice, SearchSpace
from autohas_edge.server.search.supernet import SuperNet


def _hooked_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of every convolution and linear layer, counted by forward hooks."""
    total = [0]

    def count(module: torch.nn.Module, _: object, out: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv1d | torch.nn.Conv2d):
            taps = int(np.prod(module.kernel_size))
            total[0] += out.numel() * (module.in_channels // module.groups) * taps
        elif isinstance(module, torch.nn.Linear):
            total[0] += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model.eval()(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    return total[0]


@pytest.mark.parametrize(
    ("family", "shape", "modality"),
    [("conv1d", (3, 40), "signal"), ("conv2d", (1, 9, 9), "image"), ("mlp", (20,), "tabular")],
)
def test_flops_count_equals_the_layers_macs_and_the_expectation_at_one_hot_encodings(
    family: str, shape: tuple[int, ...], modality: str
) -> None:
    layout, rng = LAYOUTS[family], random.Random(0)
    space = default_space(layout, modality, "joint")
    net = SuperNet(layout, space.arch, shape, 5)
    for _ in range(6):
        arch = {c.name: rng.choice(c.candidates) for c in space.arch}
        args = model_args_for(layout, shape, 5, arch)
        one_hot = {c.name: torch.eye(len(c))[c.candidates.index(arch[c.name])] for c in space.arch}
        flops = count_flops(args)
        assert flops == _hooked_macs(build_model(args), shape)
        assert round(float(net.expected_flops(one_hot))) == flops


def test_a_flops_budget_is_met_by_the_derived_model(tmp_path: Path, toy_signal_npz: Path) -> None:
    base = dict(dataset=str(toy_signal_npz), steps=8, retrain_steps=2, batch_size=16, plot=False)
    free = run_search(SearchConfig(**base, device="cpu"), tmp_path / "free")  # type: ignore[arg-type]
    budget = int(free["flops"] * 0.6)
    held = run_search(
        SearchConfig(**base, device="cpu", max_flops=budget),  # type: ignore[arg-type]
        tmp_path / "held",
    )
    assert held["flops"] <= budget < free["flops"]
    assert held["flops"] == count_flops(held["model_args"])
    with pytest.raises(ValueError, match="max_flops=10 is below the smallest model"):
        run_search(SearchConfig(**base, device="cpu", max_flops=10), tmp_path / "no")  # type: ignore[arg-type]


def test_the_latency_table_recovers_an_additive_cost_exactly() -> None:
    space = SearchSpace(
        (Choice("b0.expansion", (1, 3, 6)), Choice("s0.width", (0.5, 1.0))),
        hparam_choices("signal", fixed=True),
    )
    truth = {"b0.expansion": [0.1, 0.3, 0.7], "s0.width": [0.0, 0.2]}
    rng = random.Random(1)
    archs = [{c.name: rng.choice(c.candidates) for c in space.arch} for _ in range(40)]
    measured = [
        0.5 + sum(truth[c.name][c.candidates.index(a[c.name])] for c in space.arch) for a in archs
    ]
    table = lat.fit_table(space, archs, measured)
    assert table.fit_error_ms < 1e-3
    for arch, ms in zip(archs, measured, strict=True):
        assert table.predict(space, arch) == pytest.approx(ms, abs=2e-3)
    one_hot = {c.name: torch.eye(len(c))[c.candidates.index(archs[0][c.name])] for c in space.arch}
    assert float(table.expected(one_hot)) == pytest.approx(measured[0], abs=2e-3)


def _small_space() -> SearchSpace:
    """conv1d with two searchable choices (a table of 6 coefficients, 16 measured models)."""
    layout = LAYOUTS["conv1d"]
    full = default_space(layout, "signal", "hpo").arch  # one candidate per choice
    widen = {"b4.expansion": (1, 6), "s2.width": (0.5, 1.0)}
    arch = tuple(Choice(c.name, widen.get(c.name, c.candidates)) for c in full)
    return SearchSpace(arch, hparam_choices("signal", fixed=True))


def test_a_latency_budget_is_met_by_the_measured_derived_model(
    tmp_path: Path, toy_signal_npz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_EDGE_CACHE", str(tmp_path / "cache"))
    space, layout = _small_space(), LAYOUTS["conv1d"]
    shape, classes = (1, 12), 3  # the toy signal task
    widest = {"b4.expansion": 6, "s2.width": 1.0}
    narrowest = {"b4.expansion": 1, "s2.width": 0.5}

    def measured(changes: dict[str, object]) -> float:
        arch = {c.name: changes.get(c.name, c.candidates[0]) for c in space.arch}
        return lat.measure_latency_ms(model_args_for(layout, shape, classes, arch))

    # on this 12-sample toy input the two differ by a few microseconds, which timing noise can
    # reverse: the budget lies between whichever measured faster and the other
    low, high = sorted((measured(narrowest), measured(widest)))
    assert low < high
    budget = (low + high) / 2
    config = SearchConfig(
        dataset=str(toy_signal_npz),
        steps=8,
        retrain_steps=2,
        batch_size=16,
        plot=False,
        device="cpu",
        space=space,
        max_latency_ms=budget,
    )
    result = run_search(config, tmp_path / "run")
    assert result["latency_ms"] <= budget
    cached = list((tmp_path / "cache").glob("latency-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["samples"] == lat.MIN_SAMPLES

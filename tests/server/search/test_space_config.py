"""Search-space values and SearchConfig: validation names the problem, JSON round trips."""

from __future__ import annotations

import json

import pytest

from autohas_edge.server.search import SearchConfig
from autohas_edge.server.search.defaults import default_space, hparam_choices
from autohas_edge.server.search.hparams import label_smoothing, validate_hparams
from autohas_edge.server.search.models import LAYOUTS
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace


def test_choice_rejects_empty_and_duplicate_candidates() -> None:
    with pytest.raises(ValueError, match="'k' has no candidates"):
        Choice("k", ())
    with pytest.raises(ValueError, match="duplicate candidates"):
        Choice("k", (3, 3))
    with pytest.raises(ValueError, match="finite numeric bases"):
        Choice("lr", ("fast",), CONTINUOUS)


def test_space_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match=r"duplicate choice names.*'a'"):
        SearchSpace((Choice("a", (1, 2)),), (Choice("a", (3,)),))


@pytest.mark.parametrize(
    ("name", "candidates", "message"),
    [
        ("learning_rate", (0.1, 0.0), "learning-rate bases must be positive"),
        ("learning_rate", (-1.0,), "learning-rate bases must be positive"),
        ("weight_decay", (-1e-3,), "weight-decay bases must be >= 0"),
        ("optimizer", ("sgd", "lion"), "unknown optimizer bases"),
        ("loss", ("ce", "hinge"), "unknown loss basis 'hinge'"),
        ("augment", ("none", "mixup"), "unknown augmentation policies"),
    ],
)
def test_invalid_hparam_bases_are_named(name: str, candidates: tuple, message: str) -> None:
    choices = [
        c if c.name != name else Choice(name, candidates, c.kind)
        for c in hparam_choices("signal", False)
    ]
    with pytest.raises(ValueError, match=message):
        validate_hparams(choices, "signal")


def test_missing_hparam_is_named() -> None:
    choices = [c for c in hparam_choices("signal", False) if c.name != "loss"]
    with pytest.raises(ValueError, match=r"missing \['loss'\]"):
        validate_hparams(choices, "signal")


def test_label_smoothing_parses_bases() -> None:
    assert label_smoothing("ce") == 0.0
    assert label_smoothing("ls0.1") == pytest.approx(0.1)
    with pytest.raises(ValueError):
        label_smoothing("ls1.5")


@pytest.mark.parametrize("mode", ["joint", "nas", "hpo"])
def test_space_json_round_trip(mode: str) -> None:
    space = default_space(LAYOUTS["conv1d"], "signal", mode)
    again = SearchSpace.from_json(json.loads(json.dumps(space.to_json())))
    assert again == space


def test_modes_fix_the_other_half() -> None:
    nas = default_space(LAYOUTS["conv1d"], "signal", "nas")
    hpo = default_space(LAYOUTS["conv1d"], "signal", "hpo")
    assert all(len(c) == 1 for c in nas.hparams) and any(len(c) > 1 for c in nas.arch)
    assert all(len(c) == 1 for c in hpo.arch) and any(len(c) > 1 for c in hpo.hparams)


def test_choice_derivation_argmax_and_weighted_sum() -> None:
    assert Choice("opt", ("sgd", "adam", "rmsprop")).derive([0.2, 0.5, 0.3]) == "adam"
    assert Choice("wd", (1e-1, 1e-2, 1e-3), CONTINUOUS).derive([0.5, 0.5, 0.0]) == pytest.approx(
        0.055
    )


def test_config_validation_and_round_trip() -> None:
    space = default_space(LAYOUTS["mlp"], "tabular", "joint")
    config = SearchConfig(dataset="digits", mode="nas", steps=7, seed=3, space=space)
    assert SearchConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError, match="mode must be one of"):
        SearchConfig(mode="both")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        SearchConfig(steps=0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        SearchConfig(warmup_fraction=1.0)
    with pytest.raises(ValueError, match="augment_examples must be one of"):
        SearchConfig(augment_examples="both")
    with pytest.raises(ValueError, match="unknown SearchConfig fields"):
        SearchConfig.from_json({"stepz": 3})

"""Derivation (claims 11-13): argmax, weighted sum, the skip cap and the parameter budget."""

from __future__ import annotations

import pytest

from autohas_edge.server.search.defaults import default_space, hparam_choices
from autohas_edge.server.search.derive import (
    Limit,
    derive_arch,
    derive_hparams,
    derive_within,
    fine_tuning,
    smallest_params,
)
from autohas_edge.server.search.models import LAYOUTS, count_params, model_args_for
from autohas_edge.server.search.space import Choice, SearchSpace

LAYOUT = LAYOUTS["conv1d"]
SPACE = default_space(LAYOUT, "signal", "joint")


def _encodings(favourite: dict[str, str], strength: float = 0.8) -> dict[str, dict[str, float]]:
    """Every choice prefers `favourite[name]` (default: its last candidate) with `strength`."""
    out = {}
    for choice in SPACE.choices:
        pick = favourite.get(choice.name, choice.labels[-1])
        rest = (1 - strength) / (len(choice) - 1) if len(choice) > 1 else 0.0
        out[choice.name] = {label: strength if label == pick else rest for label in choice.labels}
    return out


def _params(arch: dict) -> int:
    return count_params(model_args_for(LAYOUT, (1, 40), 10, arch))


def test_categorical_choices_take_the_argmax() -> None:
    enc = _encodings(
        {
            "b0.kernel": "3",
            "b1.expansion": "1",
            "b0.depth": "keep",
            "b2.depth": "keep",
            "b4.depth": "keep",
        }
    )
    arch = derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=10**9, max_skips=3)
    assert arch["b0.kernel"] == 3 and arch["b1.expansion"] == 1 and arch["b3.kernel"] == 7


def test_hyperparameters_argmax_and_weighted_sum() -> None:
    enc = _encodings({"optimizer": "adam", "loss": "ce", "augment": "shift"})
    lr = SPACE.hparam("learning_rate")
    enc["learning_rate"] = dict(zip(lr.labels, (0.5, 0.25, 0.25), strict=True))
    hps = derive_hparams(SPACE, enc)
    assert hps["optimizer"] == "adam" and hps["loss"] == "ce" and hps["augment"] == "shift"
    a, b, c = lr.candidates
    assert hps["learning_rate"] == pytest.approx(0.5 * a + 0.25 * b + 0.25 * c)
    tuning = fine_tuning(hps)
    assert tuning["optimizer"] == "adam" and tuning["label_smoothing"] == 0.0
    assert set(tuning) == {
        "learning_rate",
        "weight_decay",
        "epochs",
        "batch_size",
        "label_smoothing",
        "optimizer",
    }


def test_skip_cap_keeps_the_least_certain_skips() -> None:
    enc = _encodings({f"b{j}.depth": "skip" for j in (0, 2, 4)})
    enc["b2.depth"] = {"keep": 0.1, "skip": 0.9}
    enc["b4.depth"] = {"keep": 0.45, "skip": 0.55}
    arch = derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=10**9, max_skips=1)
    assert [arch[f"b{j}.depth"] for j in (0, 2, 4)] == ["keep", "skip", "keep"]


@pytest.mark.parametrize("budget", [60_000, 30_000, 15_000])
def test_budget_is_respected_by_giving_up_the_least_probability(budget: int) -> None:
    enc = _encodings({f"b{j}.depth": "keep" for j in (0, 2, 4)})  # the argmax is the largest model
    unconstrained = derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=10**9, max_skips=2)
    assert _params(unconstrained) > 60_000
    arch = derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=budget, max_skips=2)
    assert _params(arch) <= budget
    assert sum(v == "skip" for v in arch.values()) <= 2


def test_impossible_budget_is_named() -> None:
    smallest = smallest_params(SPACE, LAYOUT, (1, 40), 10, max_skips=2)
    enc = _encodings({})
    assert (
        _params(derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=smallest, max_skips=2))
        <= smallest
    )
    with pytest.raises(ValueError, match="no architecture in the search space fits max_params"):
        derive_arch(SPACE, enc, LAYOUT, (1, 40), 10, max_params=smallest - 1, max_skips=2)


def _one_choice(values: tuple[int, ...], probs: tuple[float, ...]) -> tuple[SearchSpace, dict]:
    space = SearchSpace((Choice("b0.expansion", values),), hparam_choices("signal", fixed=True))
    encodings = {c.name: {lab: 1.0 for lab in c.labels} for c in space.hparams}
    encodings["b0.expansion"] = dict(zip(space.arch[0].labels, probs, strict=True))
    return space, encodings


def test_two_budgets_pulling_opposite_ways_settle_on_the_candidate_that_meets_both() -> None:
    # 6 breaks "a"; the move "a" prefers (to 1) breaks "b"; only 3 meets both
    space, enc = _one_choice((1, 3, 6), (0.3, 0.05, 0.65))
    a = Limit("a", 5, lambda arch: float(arch["b0.expansion"]))
    b = Limit("b", 5, lambda arch: 7.0 - arch["b0.expansion"])
    arch, moves = derive_within(space, enc, [a, b], max_skips=0)
    assert arch["b0.expansion"] == 3 and moves == 1


def test_budgets_no_architecture_meets_raise_instead_of_cycling() -> None:
    space, enc = _one_choice((1, 6), (0.4, 0.6))
    a = Limit("a", 3, lambda arch: float(arch["b0.expansion"]))
    b = Limit("b", 3, lambda arch: 7.0 - arch["b0.expansion"])
    with pytest.raises(ValueError, match="no architecture in the search space fits a=3"):
        derive_within(space, enc, [a, b], max_skips=0)

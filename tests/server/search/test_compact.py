"""`within_points`: which smaller architectures are compared, which one is kept, and how
`run_search` records it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autohas_edge.server.search import SearchConfig, run_search
from autohas_edge.server.search.compact import FRACTIONS, Size, pick, smaller_archs
from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.derive import derive_within, param_limit, smallest_params
from autohas_edge.server.search.models import LAYOUTS
from tests.fixtures.search_fixtures import toy_config


def _size(params: int, accuracy: float) -> Size:
    return Size({"n": params}, params, accuracy, 1.0 - accuracy)


def test_pick_keeps_the_smallest_within_the_points() -> None:
    sizes = [_size(40_000, 0.950), _size(20_000, 0.943), _size(10_000, 0.930)]
    assert pick(sizes, 1.0).params == 20_000  # 0.7 points below the best
    assert pick(sizes, 2.0).params == 10_000
    assert pick(sizes, 0.5).params == 40_000
    # the best itself may be a smaller one
    assert pick([_size(40_000, 0.90), _size(20_000, 0.95)], 0.0).params == 20_000
    with pytest.raises(ValueError, match="at least one"):
        pick([], 1.0)


def test_smaller_archs_shrink_under_fractions_of_the_derived_size() -> None:
    layout, shape, classes = LAYOUTS["conv1d"], (1, 40), 10
    space = default_space(layout, "signal", "joint")
    # encodings that like the largest candidates best: the derived model is large
    wide = {c.name: {label: 1.0 + i for i, label in enumerate(c.labels)} for c in space.choices}
    limit = param_limit(layout, shape, classes, 50_000)
    derived, _ = derive_within(space, wide, [limit], max_skips=2)
    found = smaller_archs(space, wide, [limit], limit.cost, derived, max_skips=2)
    sizes = [limit.cost(a) for a in [derived, *found]]
    assert 1 <= len(found) <= len(FRACTIONS)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    for fraction, size in zip(FRACTIONS, sizes[1:], strict=False):
        assert size <= fraction * sizes[0]
    # below the smallest model the space holds, nothing is found
    least = param_limit(layout, shape, classes, smallest_params(space, layout, shape, classes, 2))
    tiny, _ = derive_within(space, wide, [least], max_skips=2)
    assert smaller_archs(space, wide, [least], least.cost, tiny, max_skips=2) == []


def test_run_search_keeps_the_smallest_size_within_the_points(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    events: list[str] = []
    result = run_search(
        toy_config(toy_signal_npz, plot=False, race_steps=10, within_points=100.0),
        tmp_path,
        lambda e: events.append(e.stage),
    )
    compact = result["compact"]
    sizes = compact["sizes"]
    assert compact["within_points"] == 100.0 and compact["steps"] == 10 and len(sizes) >= 2
    assert sizes[0]["params"] > min(s["params"] for s in sizes)
    smallest = min(sizes, key=lambda s: s["params"])
    assert result["params"] == smallest["params"]  # every size is within 100 points
    assert result["architecture"] == smallest["architecture"]
    # the derived size's training is the race winner's: the same seeded training, not run twice
    best = max(
        (e for e in result["race"]["entries"] if e["steps"] == 10),
        key=lambda e: (e["val_accuracy"], -e["val_loss"]),
    )
    assert sizes[0]["val_accuracy"] == best["val_accuracy"]
    assert events.count("race") == len(result["race"]["entries"]) + len(sizes) - 1
    assert result["compact_seconds"] > 0


def test_within_points_zero_keeps_the_derived_model(tmp_path: Path, toy_signal_npz: Path) -> None:
    result = run_search(toy_config(toy_signal_npz, plot=False, race_steps=0), tmp_path)
    assert result["compact"] == {"within_points": 0.0, "steps": 0, "sizes": []}
    assert result["compact_seconds"] == 0


def test_within_points_is_checked() -> None:
    with pytest.raises(ValueError, match="within_points"):
        SearchConfig(within_points=-1.0)
    with pytest.raises(ValueError, match="at most 100"):
        SearchConfig(within_points=101.0)
    assert SearchConfig(race_steps=0, retrain_steps=1500).compact_length == 75

"""search.png: titled with the run, the warm-up marked, every panel drawn from a real search's history."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autohas_edge.server.search.plot import matplotlib_colors, plot_search, plot_title
from autohas_edge.server.search.space import SearchSpace


def test_the_plot_is_titled_and_redrawn_from_a_real_run(tiny_run: Path, tmp_path: Path) -> None:
    result = json.loads((tiny_run / "result.json").read_text())
    title = plot_title(result)
    assert result["config"]["mode"] in title and f"{result['test_accuracy']:.3f}" in title
    saved = torch.load(tiny_run / "search.pt", map_location="cpu", weights_only=False)
    history = saved["searcher"]["history"]
    history = history if isinstance(history, dict) else history.__dict__
    path = tmp_path / "search.png"
    plot_search(history, SearchSpace.from_json(result["space"]), path, result)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crowded_panels_get_distinct_colours() -> None:
    for n in (5, 16, 30):
        colors = matplotlib_colors(n)
        assert len({str(c) for c in colors[:n]}) == n

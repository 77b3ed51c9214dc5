"""The strategy benchmark's probe and plot on a few real search steps (no timing asserted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench import bench_strategies


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()  # the probe pins one thread, as the benchmark does
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("strategy", bench_strategies.STRATEGIES)
def test_the_probe_measures_real_steps(strategy: str) -> None:
    figures = bench_strategies.probe(strategy, batch=16, steps=3)
    assert figures["strategy"] == strategy and figures["device"] == "cpu"
    assert figures["ms_per_step"] > 0 and figures["step_memory_mib"] >= 0
    assert figures["rss_after_step1_mib"] > 50  # torch and the data are loaded by then


def test_the_plot_and_tables_cover_every_row(tmp_path: Path) -> None:
    rows = [
        {
            "strategy": s,
            "batch": b,
            "ms_per_step": 10.0 + b,
            "step_memory_mib": 5.0 * k,
            "rss_after_step1_mib": 300.0,
        }
        for k, s in enumerate(bench_strategies.STRATEGIES)
        for b in (8, 16)
    ]
    bench_strategies.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = bench_strategies._cost_table(rows)
    assert table.count("\n") >= len(rows) + 1 and "reinforce" in table
    scaling = [
        {"strategy": "reinforce", "workers": w, "threads": 1, "s_per_step": s, "agree": 0.0}
        for w, s in ((1, 1.0), (2, 0.5))
    ]
    assert "2.00x" in bench_strategies._scaling_table(scaling)

"""Dead kernel candidates (same output as a smaller kernel on a small map) leave the space."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from autohas_edge.server.search import LAYOUTS, Choice, Layout, SearchSpace, SuperNet, default_space
from autohas_edge.server.search.models import BlockSpec
from autohas_edge.server.search.pruning import block_input_sizes, prune_dead_candidates


def test_a_2x2_map_keeps_only_the_smallest_kernel() -> None:
    layout = LAYOUTS["conv2d"]
    space = default_space(layout, "image", "joint")
    assert block_input_sizes(layout, (1, 8, 8))[-1] == (2, 2)
    pruned, dropped = prune_dead_candidates(space, layout, (1, 8, 8))
    assert dropped == {"b4.kernel": ["5", "7"]}
    kernels = {c.name: c.candidates for c in pruned.arch if c.name.endswith("kernel")}
    assert kernels["b4.kernel"] == (3,) and kernels["b2.kernel"] == (3, 5, 7)


def test_nothing_is_dropped_where_every_kernel_differs() -> None:
    layout = LAYOUTS["conv1d"]
    space = default_space(layout, "signal", "joint")
    assert prune_dead_candidates(space, layout, (1, 40)) == (space, {})
    mlp = LAYOUTS["mlp"]
    assert prune_dead_candidates(default_space(mlp, "tabular", "joint"), mlp, (20,))[1] == {}


def test_the_dropped_kernels_really_had_a_zero_gradient() -> None:
    """The claim behind the pruning: on the 2x2 map the kernel logits get no gradient at all."""
    layout = LAYOUTS["conv2d"]
    space = default_space(layout, "image", "joint")
    net = SuperNet(layout, space.arch, (1, 8, 8), 10)
    logits = {c.name: torch.zeros(len(c), requires_grad=True) for c in space.arch}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    loss = torch.nn.functional.cross_entropy(
        net(torch.randn(16, 1, 8, 8), probs), torch.arange(16) % 10
    )
    loss.backward()
    assert (
        logits["b4.kernel"].grad is not None and float(logits["b4.kernel"].grad.abs().max()) < 1e-7
    )
    assert float(logits["b2.kernel"].grad.abs().max()) > 1e-7  # a live choice does get one


def test_the_search_reports_what_it_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    y = (np.arange(120) % 3).astype(np.int64)
    x[np.arange(120), 0, y * 2, y * 2] += 3.0
    data = tmp_path / "tiny.npz"
    np.savez(data, x=x, y=y)
    command = [sys.executable, "-m", "autohas_edge.server.search.cli", "--dataset", str(data)]
    command += ["--device", "cpu", "--steps", "4", "--retrain-steps", "4", "--threads", "1"]
    command += ["--quiet", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["dropped_candidates"] == {"b4.kernel": ["5", "7"]}
    assert result["architecture"]["b4.kernel"] == 3
    assert "dropped b4.kernel candidates 5, 7" in done.stdout


def test_widths_that_round_to_the_same_channels_are_dropped() -> None:
    layout = Layout("conv1d", 4, 3, 1, (BlockSpec(4, 4), BlockSpec(4, 10, 2)))
    space = SearchSpace((Choice("s0.width", (0.5, 0.75, 1.0)), Choice("s1.width", (0.5, 1.0))), ())
    pruned, dropped = prune_dead_candidates(space, layout, (1, 12))
    assert dropped == {"s0.width": ["0.75", "1.0"]}  # 4 channels whatever the fraction
    assert [c.candidates for c in pruned.arch] == [(0.5,), (0.5, 1.0)]
    # the default space leaves such a stage without a width choice
    names = [c.name for c in default_space(layout, "signal", "joint").arch]
    assert "s0.width" not in names and "s1.width" in names

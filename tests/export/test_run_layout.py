"""Export reads a run's examples the way its search did: with the run's --layout and --channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autohas_edge.export.run import _load_dataset


def test_export_reloads_the_data_with_the_runs_layout(tmp_path: Path) -> None:
    path = tmp_path / "rows.npz"
    np.savez(path, x=np.zeros((200, 100), np.float32), y=np.arange(200) % 2)
    result = {"config": {"dataset": str(path), "layout": "signal", "channels": ""}}
    assert _load_dataset(tmp_path, result).input_shape == (1, 100)
    old_run = {"config": {"dataset": str(path)}}  # from before layouts: guessed, as it was searched
    assert _load_dataset(tmp_path, old_run).input_shape == (100,)

"""The README's SDK example runs as written, against a real server on 127.0.0.1:0 and a real bundle."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autohas_edge.server.search.data import mnist1d_arrays
from tests.fixtures.server_fixtures import RunningServer

README = Path(__file__).resolve().parents[1] / "README.md"


def sdk_example() -> str:
    """The Python block that follows the `sdk-example` marker."""
    text = README.read_text()
    match = re.search(r"<!-- sdk-example:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its SDK example"
    return match.group(1)


def test_readme_sdk_example_runs(
    server_factory: Callable[..., RunningServer],
    tiny_bundle: Path,
    tmp_path: Path,
    capsys,
    trusted_key: str,
) -> None:
    server = server_factory(data_dir=tmp_path / "server")
    server.create_task(
        "gestures",
        app_ids=("com.example.gestures", "com.example.fitness"),
        purpose="personalization",
        input_shape=(1, 40),
        num_classes=10,
    )
    model_id = server.handle.app.models.import_bundle("gestures", "readme", tiny_bundle).model_id
    x_train, y_train, _, _ = mnist1d_arrays(seed=1)
    x, y = x_train[:120], y_train[:120]
    namespace = {
        "ROOT": tmp_path / "device",
        "ADDRESS": server.address,
        "PUBLIC_KEY": trusted_key,
        "x": x,
        "y": y,
    }
    exec(compile(sdk_example(), str(README), "exec"), namespace)
    assert namespace["model"].model_id == namespace["fitness"].model_id == model_id
    assert namespace["probabilities"].shape == (5, 10)
    np.testing.assert_allclose(namespace["probabilities"].sum(axis=1), 1.0, rtol=1e-4)
    assert (
        server.handle.app.store.count_examples("gestures", "com.example.gestures", "user-42") == 40
    )
    accepted, before, after = capsys.readouterr().out.split()
    assert accepted in ("True", "False") and float(after) >= 0 and float(before) >= 0

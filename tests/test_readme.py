"""The README's SDK examples run as written, against a real server on 127.0.0.1:0 and a real bundle."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.server.search.data import mnist1d_arrays
from tests.fixtures.server_fixtures import RunningServer

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The Python block that follows the `<!-- marker: ... -->` comment."""
    text = README.read_text()
    match = re.search(rf"<!-- {marker}:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README lost its {marker} block"
    return match.group(1)


def test_readme_sdk_examples_run(
    server_factory: Callable[..., RunningServer],
    tiny_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
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
    work = tmp_path / "work"
    work.mkdir()
    np.savez(work / "my_examples.npz", x=x_train[:120], y=y_train[:120])
    shutil.copytree(tiny_bundle, work / "dist" / "gestures")
    (work / "signing.pub.pem").write_text(trusted_key)
    monkeypatch.chdir(work)
    monkeypatch.setenv("AUTOHAS_ADDRESS", server.address)
    monkeypatch.setenv("AUTOHAS_DEVICE_DIR", str(tmp_path / "device"))
    namespace: dict[str, object] = {}  # nothing given: the block defines what it uses
    exec(compile(readme_block("sdk-example"), str(README), "exec"), namespace)
    model, fitness, probabilities = (namespace[k] for k in ("model", "fitness", "probabilities"))
    assert model.model_id == fitness.model_id == model_id  # type: ignore[attr-defined]
    assert probabilities.shape == (5, 10)  # type: ignore[attr-defined]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)  # type: ignore[attr-defined]
    assert (
        server.handle.app.store.count_examples("gestures", "com.example.gestures", "user-42") == 40
    )
    accepted, before, after = capsys.readouterr().out.split()
    assert accepted in ("True", "False") and float(after) >= 0 and float(before) >= 0

    server.stop()  # the offline path needs no server
    exec(compile(readme_block("sdk-offline"), str(README), "exec"), namespace)
    labels = capsys.readouterr().out
    assert len(re.findall(r"\d+", labels)) == 3
    assert (tmp_path / "device" / "offline-hub").is_dir()

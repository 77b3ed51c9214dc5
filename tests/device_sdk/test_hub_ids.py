"""Every id the server accepts installs on a device hub and comes back; nothing leaves the hub's root."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autohas_edge.common.ids import ID_PATTERN
from autohas_edge.device_sdk import Hub
from autohas_edge.server.errors import InvalidArgument
from autohas_edge.server.validate import check_id

#: ids as the server's validator sees them: drawn from its grammar, and from a wider alphabet
#: (whatever of those the validator refuses is skipped)
candidates = st.one_of(
    st.from_regex(ID_PATTERN, fullmatch=True),
    st.text(alphabet="aZ09._:@+=/-\\ %", min_size=1, max_size=130),
    st.sampled_from(["gestures:v2", "team/gestures", "a/../b", "a//b:", "x" + "/" * 127]),
)


def _server_accepts(ident: str) -> bool:
    try:
        check_id("task.task_id", ident)
    except InvalidArgument:
        return False
    return True


def _inside(root: Path) -> bool:
    resolved = root.resolve()
    return all(p.resolve().is_relative_to(resolved) for p in root.rglob("*"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ident=candidates)
def test_every_id_the_server_accepts_installs_and_round_trips(bundle_dir: Path, ident: str) -> None:
    assume(_server_accepts(ident))
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp) / "hub", allow_unsigned=True)  # ids, not signatures, are tested
        installed = hub.install(bundle_dir, ident, formats=["onnx"], model_id=ident)
        hub.install(bundle_dir, ident, app_id=ident, formats=["onnx"], model_id=ident)
        assert installed == ident and hub.tasks() == [ident]
        assert hub.installed(ident) == ident == hub.installed(ident, ident)
        assert hub.installed_formats(ident, ident) == ["onnx"]
        model = hub.model(ident, app_id=ident)
        assert (model.task_id, model.app_id, model.model_id) == (ident, ident, ident)
        assert not model.shared and model.predict(np.zeros(model.input_shape, np.float32)).shape
        assert Hub(hub.root).tasks() == [ident]  # read back from disk by a new hub
        assert _inside(hub.root)


def test_ids_that_differ_only_in_separators_are_different_tasks(
    tmp_path: Path, bundle_dir: Path
) -> None:
    hub = Hub(tmp_path / "hub", allow_unsigned=True)
    for i, task in enumerate(("team/gestures", "team:gestures", "team_gestures", "team.gestures")):
        hub.install(bundle_dir, task, formats=["onnx"], model_id=f"m{i}")
    assert hub.tasks() == sorted(
        ["team.gestures", "team/gestures", "team:gestures", "team_gestures"]
    )
    assert [hub.installed(t) for t in ("team/gestures", "team:gestures")] == ["m0", "m1"]


@pytest.mark.parametrize("bad", ["..", "../escape", "/abs/path", "a\\b", ".hidden", "a b"])
def test_path_traversal_is_still_refused(tmp_path: Path, bundle_dir: Path, bad: str) -> None:
    hub = Hub(tmp_path / "hub", allow_unsigned=True)
    with pytest.raises(ValueError, match="task_id"):
        hub.install(bundle_dir, bad, formats=["onnx"])
    with pytest.raises(ValueError, match="app_id"):
        hub.install(bundle_dir, "t", app_id=bad, formats=["onnx"])
    with pytest.raises(ValueError, match="model_id"):
        hub.install(bundle_dir, "t", model_id=bad, formats=["onnx"])
    assert not any((tmp_path / "hub" / "tasks").iterdir())
    assert _inside(tmp_path / "hub")

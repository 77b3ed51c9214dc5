"""The SDK's low-severity findings of issue 17: every failure an SDKError, bounded manifest numbers,
checked reference paths, a private state database, and onnxruntime telemetry off."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from autohas_edge.device_sdk import (
    BundleError,
    Hub,
    InvalidIdError,
    InvalidInputError,
    Manifest,
    SDKError,
    ServerClient,
    StateDirError,
)
from tests.device_sdk.helpers import TASK

ROOT = Path(__file__).resolve().parents[2]


def _edited(manifest_json: dict, edit) -> str:
    manifest = json.loads(json.dumps(manifest_json))
    edit(manifest)
    return json.dumps(manifest)


def test_a_bad_model_id_is_an_sdk_error(bundle_dir: Path, tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", allow_unsigned=True)
    with pytest.raises(InvalidIdError, match=r"model_id '\.\./\.\.'"):
        hub.install(bundle_dir, TASK, model_id="../..")
    with pytest.raises(SDKError, match="task_id"):
        hub.model("../..", app_id="com.a")


def test_deeply_nested_json_is_a_bundle_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(BundleError, match=r"malformed manifest\.json: RecursionError"):
        Manifest.from_json(deep)


def test_a_file_and_a_file_inside_it_are_refused(
    bundle_copy: Path, tmp_path: Path, manifest_json: dict
) -> None:
    (bundle_copy / "a").write_bytes(b"x")
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    entry = {"sha256": "0" * 64, "bytes": 1}
    manifest["files"].update({"a": entry, "a/b": entry})
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lists 'a' as a file and 'a/b' inside it"):
        Hub(tmp_path / "hub", allow_unsigned=True).install(bundle_copy, TASK)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("epochs", 1e12, r"epochs 1000000000000 is not in \[1, 1000\]"),
        ("epochs", 2.5, r"epochs 2\.5 is not a whole number"),
        ("batch_size", 0, r"batch_size 0 is not in \[1, 65536\]"),
        ("learning_rate", float("inf"), "learning_rate inf is not a finite number"),
        ("weight_decay", -1.0, r"weight_decay -1\.0 is negative"),
    ],
)
def test_fine_tuning_numbers_are_bounded(
    manifest_json: dict, key: str, value: float, problem: str
) -> None:
    text = _edited(
        manifest_json, lambda m: m["fine_tuning"]["hyperparameters"].update({key: value})
    )
    with pytest.raises(BundleError, match=rf"fine_tuning\.hyperparameters: {problem}"):
        Manifest.from_json(text)


def test_an_app_cannot_ask_for_a_fine_tune_that_never_ends(hub: Hub, skewed_user) -> None:
    model = hub.model(TASK, app_id="com.a")
    with pytest.raises(InvalidInputError, match="epochs"):
        model.fine_tune(skewed_user.x_tune, skewed_user.y_tune, hyperparameters={"epochs": 1e12})


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda m: m["input"].update(shape=["batch", 1, 2**40]), "holds more than"),
        (lambda m: m["fine_tuning"].update(feature_dim=2**40), "feature_dim"),
        (lambda m: m["fine_tuning"].update(num_classes=True), "num_classes True"),
        (lambda m: m["files"]["head.npz"].update(bytes=-1), "size of head.npz"),
        (lambda m: m["artifacts"][0].update(batch=10**9), "batch"),
    ],
)
def test_other_manifest_numbers_are_bounded(manifest_json: dict, edit, problem: str) -> None:
    with pytest.raises(BundleError, match=problem):
        Manifest.from_json(_edited(manifest_json, edit))


def test_the_reference_file_gets_the_path_check(manifest_json: dict) -> None:
    escaping = _edited(manifest_json, lambda m: m["reference"].update(file="../../outside.npz"))
    with pytest.raises(BundleError, match="escapes the bundle directory"):
        Manifest.from_json(escaping)
    unlisted = _edited(manifest_json, lambda m: m["reference"].update(file="elsewhere.npz"))
    with pytest.raises(BundleError, match=r"reference file 'elsewhere\.npz' is not listed"):
        Manifest.from_json(unlisted)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # what most apps run with: new files 0644, directories 0755
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_database_is_private(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "state"
    with ServerClient("127.0.0.1:1", state, app_id="com.a", user_id="u") as client:
        client.outbox.set("device_token", "secret")
        files = sorted(state.iterdir())
        assert _mode(state) == 0o700
        assert files and all(_mode(p) == 0o600 for p in files), [
            (p.name, oct(_mode(p))) for p in files
        ]
    shared = tmp_path / "app-files"
    shared.mkdir(mode=0o755)
    ServerClient("127.0.0.1:1", shared, app_id="com.a", user_id="u").close()
    assert _mode(shared) == 0o700  # the SDK's own directory: tightened


def test_a_shared_directory_is_refused_for_the_state(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    public.chmod(0o1777)
    with pytest.raises(StateDirError, match="is shared"):
        ServerClient("127.0.0.1:1", public, app_id="com.a", user_id="u")
    assert _mode(public) == 0o1777 and not any(public.iterdir())


TELEMETRY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from autohas_edge.device_sdk import Hub

    hub = Hub(sys.argv[1], allow_unsigned=True)
    hub.install(sys.argv[2], "t", formats=["onnx"])
    hub.model("t", app_id="com.a").predict(np.zeros(hub.model("t", app_id="com.a").input_shape))
""")


def test_onnxruntime_telemetry_writes_nothing_under_home(bundle_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    drop = {"ORT_DISABLE_TELEMETRY", "CI", "ORT_RUNNING_UNIT_TESTS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(home / ".cache"))
    run = subprocess.run(
        [sys.executable, "-c", TELEMETRY_SCRIPT, str(tmp_path / "hub"), str(bundle_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []

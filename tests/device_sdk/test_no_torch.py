"""The SDK imports and works end to end in a process where torch cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.device_sdk.helpers import APP, TASK, create_bundle_task
from tests.fixtures.server_fixtures import RunningServer

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this process ({name})")
            return None

    sys.meta_path.insert(0, BlockTorch())
    sys.modules["torch"] = None  # `import torch` now raises, even if something cached it

    import importlib, pkgutil
    import numpy as np
    import autohas_edge.common as common
    import autohas_edge.device_sdk as device_sdk
    from autohas_edge.device_sdk import Hub, ServerClient

    # the shared numpy layer ships in the device wheel: every module of it must import here
    common_modules = sorted(m.name for m in pkgutil.iter_modules(common.__path__))
    for name in common_modules:
        importlib.import_module(f"autohas_edge.common.{name}")

    address, state, bundle, data_path, task = sys.argv[1:6]
    data = np.load(data_path)
    x, y = data["x"], data["y"]
    out = {"common": common_modules}
    key = open(sys.argv[7]).read()
    hub = Hub(state + "/hub", trusted_keys=[key])
    hub.install(bundle, task)
    for fmt in ("onnx", "tflite"):
        model = hub.model(task, app_id=f"com.{fmt}", private=True, format=fmt)
        out[fmt + "_predict"] = list(model.predict(x[:4]).shape)
        out[fmt + "_embed"] = list(model.embed(x[0]).shape)
        out[fmt + "_accepted"] = model.fine_tune(x, y).accepted
    with ServerClient(address, state, app_id=sys.argv[6], user_id="alice") as client:
        client.register()
        client.grant_consent()
        out["stored"] = len(client.upload(task, x[:8], y[:8]).stored)
        out["fetched"] = client.fetch_model(task, Hub(state + "/hub2", trusted_keys=[key])).updated
    out["torch_loaded"] = sys.modules.get("torch") is not None or any(
        m.startswith("torch.") for m in sys.modules)
    print(json.dumps(out))
""")


def test_the_sdk_runs_with_torch_blocked(
    server_factory: Callable[..., RunningServer],
    bundle_dir: Path,
    manifest_json: dict,
    skewed_user,
    tmp_path: Path,
    signing_key_file: Path,
) -> None:
    from autohas_edge.export.signing import public_key_path

    server = server_factory(data_dir=tmp_path / "server")
    create_bundle_task(server, manifest_json)
    server.handle.app.models.import_bundle(TASK, "import", bundle_dir)
    user = skewed_user
    data = tmp_path / "user.npz"
    import numpy as np

    np.savez(data, x=user.x_tune, y=user.y_tune)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            server.address,
            str(tmp_path / "state"),
            str(bundle_dir),
            str(data),
            TASK,
            APP,
            str(public_key_path(signing_key_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    classes, dim = (
        manifest_json["fine_tuning"]["num_classes"],
        manifest_json["fine_tuning"]["feature_dim"],
    )
    for fmt in ("onnx", "tflite"):
        assert out[f"{fmt}_predict"] == [4, classes] and out[f"{fmt}_embed"] == [dim]
        assert out[f"{fmt}_accepted"] is True
    assert out["stored"] == 1 and out["fetched"] is True
    assert {"filetable", "fs", "ids", "proc", "tensor"} <= set(out["common"])
    assert out["torch_loaded"] is False

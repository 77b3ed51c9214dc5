"""SIGKILL in the middle of installs and fine-tunes never leaves the hub without a working model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from autohas_edge.device_sdk import Hub
from tests.device_sdk.helpers import TASK

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from autohas_edge.device_sdk import Hub

    root, bundle, data, task, key = sys.argv[1:6]
    hub = Hub(root, trusted_keys=[key])
    xy = np.load(data)
    print("ready", flush=True)
    for i in range(1000):
        hub.install(bundle, task, model_id=f"m{i % 3}")
        model = hub.model(task, app_id="com.a")
        model.fine_tune(xy["x"], xy["y"], seed=i)
        model.reset(0) if i % 4 == 3 else None
""")


def test_sigkill_during_install_and_fine_tune(
    bundle_dir: Path, skewed_user, tmp_path: Path, trusted_key: str
) -> None:
    root = tmp_path / "hub"
    Hub(root, trusted_keys=[trusted_key]).install(bundle_dir, TASK, model_id="m0")
    user = skewed_user
    data = tmp_path / "user.npz"
    np.savez(data, x=user.x_tune, y=user.y_tune)
    for delay in (0.3, 0.9, 1.7):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(root),
                str(bundle_dir),
                str(data),
                TASK,
                trusted_key,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        hub = Hub(root)  # what a restarted app sees
        model = hub.model(TASK, app_id="com.a")
        assert hub.installed(TASK) in {"m0", "m1", "m2"} and model.version in model.versions()
        probs = model.predict(user.x_eval)
        assert probs.shape == (len(user.x_eval), model.num_classes) and np.all(np.isfinite(probs))
        assert not any((root / "staging").iterdir())  # a killed install's leftovers are cleaned

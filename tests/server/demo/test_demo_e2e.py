"""The main job end to end (issue 6), on a small budget, consent respected, bundles verified, no
user hurt. 200 retraining steps: a model that has trained (after 30 steps its int8 artifacts
disagreed with the float model on 2 of 128 test examples, over the 1-point bound)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autohas_edge.server.demo.run import DemoConfig, DemoOutcome, decision, run_demo
from autohas_edge.server.demo.summary import write_report

AUTOHAS = [sys.executable, "-m", "autohas_edge.server.cli", "demo"]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> DemoOutcome:
    root = tmp_path_factory.mktemp("demo")
    return run_demo(DemoConfig(root / "data", root / "report", users=6, steps=6, retrain_steps=200))


def test_only_consenting_users_data_is_used(outcome: DemoOutcome) -> None:
    used = {u.user_id: u.examples for u in outcome.audit.users}
    for i, device in enumerate(outcome.devices):
        o = device.outcome
        if decision(i, len(outcome.devices)) == "consent":
            assert used.get(o.user_id) == o.uploaded > 0
        else:
            assert o.user_id not in used, (
                f"{o.user_id} ({decision(i, 6)}) must not be in the job's data"
            )
    assert outcome.revoked_deleted > 0
    assert outcome.audit.total_examples == sum(used.values())


def test_every_device_installed_a_verified_bundle_in_all_formats(outcome: DemoOutcome) -> None:
    formats = {a["format"] for a in outcome.manifest["artifacts"]}
    assert formats == {"onnx", "tflite", "onnx-int8", "tflite-int8"}
    assert outcome.manifest["verification"]["passed"] is True
    for device in outcome.devices:
        model = device.hub.model("gestures", app_id=device.app_id)
        assert model.model_id == outcome.exported[0].model.model_id


def test_fine_tuning_hurts_no_user(outcome: DemoOutcome) -> None:
    """A fine-tune is kept only when it gets 2+ more of the user's held-out examples right; the
    user's evaluation examples are another sample, on which a kept head of this small job can
    still score one example lower by chance, never more, and the users gain on the whole."""
    lifts = []
    for device in outcome.devices:
        o = device.outcome
        assert o.accuracy_before is not None and o.accuracy_after is not None
        one_example = 1 / len(device.user.y[device.evaluation])
        assert o.accuracy_after >= o.accuracy_before - one_example - 1e-9, o
        if o.kept_previous:
            assert o.accuracy_after == o.accuracy_before, o
        lifts.append(o.accuracy_after - o.accuracy_before)
    assert sum(lifts) > 0, lifts


def test_report_has_summary_and_plots(outcome: DemoOutcome, tmp_path: Path) -> None:
    path = write_report(outcome, tmp_path / "report")
    text = path.read_text()
    for heading in (
        "Derived model",
        "Artifacts",
        "Consent and data use",
        "Personalization",
        "Timing",
    ):
        assert f"## {heading}" in text
    assert "None of the decliners' or the revoker's examples were used" in text
    for png in ("encodings.png", "user_accuracy.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AUTOHAS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _demo("--data-dir", str(tmp_path / "d"), "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr  # gRPC's own log line may precede ours
    assert done.stderr.strip().splitlines()[-1].startswith("autohas demo: cannot listen"), (
        done.stderr
    )


def test_unwritable_data_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = _demo("--data-dir", str(blocker / "sub"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "autohas demo:" in done.stderr, done.stderr
    assert "sub" in done.stderr

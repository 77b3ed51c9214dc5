"""Thread defaults: the cores a process may really use (affinity, cgroup quota), shared by workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autohas_edge.server.search import threads


def _quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(text)
    monkeypatch.setattr(threads, "CGROUP_V2", cpu_max)


def test_a_cgroup_quota_caps_the_usable_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    _quota(tmp_path, monkeypatch, "150000 100000\n")  # 1.5 cores -> 2 threads
    assert threads.cgroup_quota() == 2 and threads.usable_cores() == 2
    _quota(tmp_path, monkeypatch, "max 100000\n")
    assert threads.cgroup_quota() is None and threads.usable_cores() == 8
    _quota(tmp_path, monkeypatch, "garbage\n")
    assert threads.usable_cores() == 8  # unreadable quota: affinity alone


def test_the_affinity_mask_counts_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(threads, "CGROUP_V2", Path("/nonexistent/cpu.max"))
    monkeypatch.setattr(threads, "CGROUP_V1", (Path("/nonexistent/q"), Path("/nonexistent/p")))
    assert threads.usable_cores() == 1 and threads.default_threads(workers=4) == 1


def test_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert [threads.default_threads(w) for w in (1, 2, 3, 32)] == [16, 8, 5, 1]
    assert threads.resolve_threads(3, workers=2) == 3  # an explicit count wins
    with pytest.raises(ValueError, match="threads must be >= 0"):
        threads.resolve_threads(-1)


def test_the_cli_applies_and_records_the_thread_count(tmp_path: Path, toy_signal_npz: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "autohas_edge.server.search.cli",
        "--dataset",
        str(toy_signal_npz),
    ]
    command += ["--device", "cpu", "--steps", "4", "--retrain-steps", "4", "--max-params", "20000"]
    command += ["--threads", "1", "--quiet", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "result.json").read_text())["torch_threads"] == 1

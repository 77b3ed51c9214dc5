"""`--executor ray` settings and the Ray executor's node-side housekeeping (fast: no cluster)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autohas_edge.server.cli import main
from autohas_edge.server.config import ServerConfig

TOKEN = "ray-setup-test-token-Zq3x9Lw2Pr7Kt4Nv8Bm1Hy6"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"executor": "slurm"}, "executor"),
        ({"ray_cpus_per_worker": 0.0}, "ray_cpus_per_worker"),
        ({"ray_gpus_per_worker": -2.0}, "ray_gpus_per_worker"),
        ({"ray_cpus_per_worker": float("nan")}, "ray_cpus_per_worker"),
    ],
)
def test_bad_executor_settings_are_refused_naming_the_field(
    tmp_path: Path, changes: dict, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        ServerConfig(data_dir=tmp_path, operator_token=TOKEN, **changes)


def test_an_unreachable_ray_cluster_is_a_one_line_error_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["server", "--data-dir", str(tmp_path), "--executor", "ray"]
    code = main([*argv, "--ray-address", f"127.0.0.1:{port}", "--port", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"autohas server: --ray-address '127.0.0.1:{port}': cannot reach")


def test_a_stale_scratch_directory_is_swept_and_a_live_one_kept(tmp_path: Path) -> None:
    from autohas_edge.common.proc import process_identity
    from autohas_edge.server.jobs.ray_worker import OWNER, sweep_stale

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = os.getpid()
    owners = {
        "job-gone-1": f"{gone.pid} was-here",  # its actor was killed
        "job-reused-2": f"{me} 0",  # its pid now belongs to another process
        "job-live-3": f"{me} {process_identity(me)}",
    }
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "dataset.npz").write_bytes(b"rows")
        (tmp_path / name / OWNER).write_text(owner)
    (tmp_path / "not-ours").mkdir()
    sweep_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job-live-3", "not-ours"]


def test_files_a_node_sends_back_stay_inside_the_job_dir(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from autohas_edge.server.jobs.ray_executor import write_synced

    job_dir = tmp_path / "jobs" / "job-1"
    (job_dir / "run").mkdir(parents=True)
    (job_dir / "dataset.npz").write_bytes(b"the server's snapshot")
    write_synced(
        job_dir,
        {
            "run/search.json": b"{}",
            "worker.log": b"log",
            "../escaped": b"x",
            "/abs": b"x",
            "dataset.npz": b"overwritten",
            "purge.json": b"x",
        },
    )
    assert (job_dir / "run" / "search.json").read_bytes() == b"{}"
    assert (job_dir / "worker.log").read_bytes() == b"log"
    assert not (tmp_path / "jobs" / "escaped").exists() and not Path("/abs").exists()
    assert (job_dir / "dataset.npz").read_bytes() == b"the server's snapshot"
    assert not (job_dir / "purge.json").exists()


def test_a_job_record_written_before_placement_existed_still_loads() -> None:
    from autohas_edge.server.domain import Job, JobSpec, JobState

    job = Job("job-1", JobSpec("t"), JobState.SUCCEEDED, 1.0, placement="node 1a2b3c4d (10.0.0.5)")
    record = job.to_dict()
    assert Job.from_dict(record) == job
    del record["placement"]
    assert Job.from_dict(record).placement == ""


def test_a_multi_worker_job_fits_when_the_nodes_together_hold_its_workers() -> None:
    from autohas_edge.server.jobs.ray_executor import _workers_fitting

    bundle = {"CPU": 1.0, "GPU": 0.0}
    assert _workers_fitting({"CPU": 2.0}, bundle) == 2  # a node of 2 CPUs holds two 1-CPU workers
    assert _workers_fitting({"CPU": 0.0}, bundle) == 0  # a head without CPUs holds none
    gpu = {"CPU": 1.0, "GPU": 1.0}
    assert _workers_fitting({"CPU": 8.0, "GPU": 2.0}, gpu) == 2  # the scarcer resource decides
    assert _workers_fitting({"CPU": 8.0}, gpu) == 0


def test_where_a_job_runs_names_each_node_once() -> None:
    from autohas_edge.server.jobs.ray_executor import where

    a = {"node_id": "1a2b3c4d5e6f", "ip": "10.0.0.5"}
    b = {"node_id": "5e6f7a8b9c0d", "ip": "10.0.0.6"}
    assert where([a]) == where([a, a]) == "node 1a2b3c4d (10.0.0.5)"
    assert where([a, b, a]) == "nodes 1a2b3c4d (10.0.0.5) x2, 5e6f7a8b (10.0.0.6)"

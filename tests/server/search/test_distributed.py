"""Multi-worker search under torchrun (gloo on CPU) and the REINFORCE controller's update."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autohas_edge.server.search import ProgressEvent, SearchConfig
from autohas_edge.server.search import SearchCancelled as Cancelled
from autohas_edge.server.search import launcher as multiworker
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.reinforce import controller_objective

ROOT = Path(__file__).resolve().parents[3]
RESULT_KEYS = {
    "architecture",
    "hyperparameters",
    "encodings",
    "params",
    "test_accuracy",
    "search_seconds",
    "retrain_seconds",
    "search_steps",
    "stop_reason",
    "retrain_steps",
    "checkpoint",
    "dataset",
    "fine_tuning",
    "config",
    "lr_trajectory",
    "model_args",
    "space",
    "mode",
    "strategy",
    "device",
    "effective_learning_rate",
    "workers",
}


def _search(out: Path, dataset: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "autohas_edge.server.search.cli",
        "--dataset",
        str(dataset),
        "--device",
        "cpu",
        "--steps",
        "6",
        "--warmup-fraction",
        "0.34",
        "--retrain-steps",
        "4",
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        *options,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("strategy", ["reinforce", "differentiable"])
def test_two_gloo_workers_finish_and_agree_on_the_final_encodings(
    tmp_path: Path, toy_signal_npz: Path, strategy: str
) -> None:
    done = _search(tmp_path, toy_signal_npz, "--workers", "2", "--strategy", strategy)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # only rank 0 reports
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result) >= RESULT_KEYS and result["strategy"] == strategy
    assert result["workers"] == {"world_size": 2, "backend": "gloo", "max_encoding_difference": 0.0}
    assert result["search_steps"] == 6
    moved = [max(p.values()) - min(p.values()) for p in result["encodings"].values()]
    assert max(moved) > 1e-4  # the averaged encoding gradients did move the encodings
    checkpoint = torch.load(tmp_path / "search.pt", weights_only=True)
    gens = checkpoint["rank_gens"]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # each rank samples its own batches


def test_one_worker_result_says_so(tmp_path: Path, toy_signal_npz: Path) -> None:
    done = _search(tmp_path, toy_signal_npz, "--strategy", "reinforce", "--steps", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "result.json").read_text())["workers"] == {"world_size": 1}


def test_bad_worker_count_is_a_clear_error(tmp_path: Path, toy_signal_npz: Path) -> None:
    done = _search(tmp_path, toy_signal_npz, "--workers", "0")
    assert done.returncode == 2 and "--workers must be >= 1" in done.stderr


def _config(dataset: Path, **changes: object) -> SearchConfig:
    base = {
        "dataset": str(dataset),
        "steps": 6,
        "warmup_fraction": 0.34,
        "retrain_steps": 3,
        "batch_size": 16,
        "checkpoint_every": 2,
        "device": "cpu",
        "strategy": "reinforce",
        "samples": 4,
    }
    return SearchConfig(**{**base, **changes})


def test_a_multiworker_job_cancels_then_resumes_from_its_checkpoint(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    config, seen = _config(toy_signal_npz), []
    with pytest.raises(Cancelled, match="search cancelled at step"):
        # stop once the search has reported its second step (not after a count of events of any
        # stage: under load the workers' events arrive late, and the stop then fell in the race)
        stop = lambda: any(e.stage == "search" and e.step >= 2 for e in seen)  # noqa: E731
        multiworker.run(config, tmp_path, 2, seen.append, should_stop=stop)
    stopped_at = torch.load(tmp_path / "search.pt", weights_only=True)["searcher"]["step"]
    assert 0 < stopped_at < 6 and not (tmp_path / "result.json").exists()
    events: list[ProgressEvent] = []
    result = multiworker.run(config, tmp_path, 2, events.append, should_stop=lambda: False)
    assert result["search_steps"] == 6 and result["workers"]["max_encoding_difference"] == 0.0
    search_steps = [e.step for e in events if e.stage == "search"]
    assert search_steps[0] == stopped_at + 1 and search_steps[-1] == 6  # resumed, not restarted
    assert events[-1].stage == "done"
    left = sorted(p.name for p in tmp_path.glob("workers.*"))
    assert left == ["workers.log"]  # the hand-over files are gone once the run is done


def test_multiworker_failure_names_the_reason(tmp_path: Path) -> None:
    config = _config(tmp_path / "missing.npz")
    with pytest.raises(multiworker.WorkersFailed, match=r"missing\.npz"):
        multiworker.run(config, tmp_path / "run", 2, lambda e: None, should_stop=lambda: False)


def test_the_controller_moves_towards_the_better_candidate() -> None:
    """A toy bandit: candidate 2 of 'arm' earns reward 1, the others 0; 'other' does not matter."""
    torch.manual_seed(0)
    logits = {
        "arm": torch.zeros(3, requires_grad=True),
        "other": torch.zeros(2, requires_grad=True),
    }
    opt = torch.optim.Adam(logits.values(), lr=0.05)
    baseline = 0.0
    for _ in range(150):
        probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
        picks = [
            {k: int(torch.multinomial(p.detach(), 1)) for k, p in probs.items()} for _ in range(8)
        ]
        rewards = [float(pick["arm"] == 2) for pick in picks]
        opt.zero_grad()
        controller_objective(probs, picks, rewards, baseline).backward()
        opt.step()
        baseline = 0.9 * baseline + 0.1 * sum(rewards) / len(rewards)
    final = {k: torch.softmax(v.detach(), 0) for k, v in logits.items()}
    assert final["arm"][2] > 0.9
    assert abs(float(final["other"][0]) - 0.5) < 0.25  # no reward signal: stays near uniform


def test_a_single_process_comm_is_a_no_op() -> None:
    comm, t = Comm(), torch.tensor([1.0, 2.0])
    assert comm.is_main and not comm.active and comm.mean(3.5) == 3.5
    assert torch.equal(comm.mean_(t), torch.tensor([1.0, 2.0])) and comm.flags(True, False) == (
        True,
        False,
    )
    assert comm.share(64, minimum=8) == 64 and comm.rank_seed(5) == 5
    assert Comm(rank=1, world_size=4).share(16, minimum=8) == 8
    assert [Comm(rank=r, world_size=2).share(5) for r in (0, 1)] == [3, 2]  # the parts add up


def test_ranks_exit_when_the_job_worker_dies(tmp_path: Path, toy_signal_npz: Path) -> None:
    """A killed server (and so job worker) must not leave torchrun or its ranks searching."""
    out = tmp_path / "orphan-run"
    script = (
        "from autohas_edge.server.search import SearchConfig, launcher as multiworker; "
        f"c = SearchConfig(dataset={str(toy_signal_npz)!r}, steps=100000, retrain_steps=1, "
        "batch_size=16, device='cpu', strategy='reinforce', samples=2); "
        f"multiworker.run(c, {str(out)!r}, 2, lambda e: None, lambda: False)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    progress = out / multiworker.PROGRESS
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.stat().st_size > 0):
        assert time.monotonic() < deadline and parent.poll() is None, "the search never started"
        time.sleep(0.2)
    assert _processes_naming(out)  # torchrun and both ranks are running
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _processes_naming(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_naming(out)


def _processes_naming(path: Path) -> list[int]:
    """Live processes whose command line mentions `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except (OSError, ValueError):
            continue
        if str(path).encode() in cmdline and "\nState:\tZ" not in status:
            found.append(int(proc.name))
    return found


def test_ctrl_c_stops_every_worker_after_a_checkpoint(tmp_path: Path, toy_signal_npz: Path) -> None:
    """SIGINT reaches the `--workers` command only; rank 0 checkpoints, all ranks stop, exit code 130."""
    command = [
        sys.executable,
        "-m",
        "autohas_edge.server.search.cli",
        "--dataset",
        str(toy_signal_npz),
        "--device",
        "cpu",
        "--steps",
        "100000",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path),
        "--quiet",
        "--workers",
        "2",
        "--strategy",
        "reinforce",
        "--samples",
        "2",
    ]
    cli = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    progress = tmp_path / multiworker.PROGRESS
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline and cli.poll() is None, "the search never started"
        time.sleep(0.2)
    cli.send_signal(signal.SIGINT)
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 130, stderr
    assert "search cancelled at step" in stderr
    assert torch.load(tmp_path / "search.pt", weights_only=True)["searcher"]["step"] >= 3
    deadline = time.monotonic() + 30
    while _processes_naming(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_naming(tmp_path)


def test_a_one_worker_checkpoint_resumes_with_two_workers(
    tmp_path: Path, toy_signal_npz: Path
) -> None:
    from autohas_edge.server.search import SearchCancelled, run_search

    config, seen = _config(toy_signal_npz), []
    with pytest.raises(SearchCancelled):
        run_search(config, tmp_path, on_progress=seen.append, should_stop=lambda: len(seen) >= 3)
    result = multiworker.run(config, tmp_path, 2, lambda e: None, should_stop=lambda: False)
    assert result["search_steps"] == 6 and result["workers"]["max_encoding_difference"] == 0.0
    gens = torch.load(tmp_path / "search.pt", weights_only=True)["rank_gens"]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # rank 1 got a stream of its own

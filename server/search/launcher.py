"""One search in several worker processes under torchrun (`autohas search --workers N`, and the
server's jobs with `--search-workers N`).

The caller (`run`) starts ``python -m torch.distributed.run --standalone --nproc-per-node N
-m autohas_edge.server.search.launcher ...`` and talks to rank 0 through small files in the run
directory: rank 0 appends one JSON progress line per step, the job worker creates the stop file to
cancel (rank 0 polls it and every rank stops at the same step), and rank 0 writes the outcome. Every
rank exits when the job worker is gone, so a killed server never leaves ranks running.

A job that spans several machines (the Ray executor's multi-node jobs) calls `run` once on each with
a `Rendezvous`: torchrun's static rendezvous at node 0's address instead of `--standalone`. Node 0
holds rank 0 and reports as above; the other nodes only compute (their `run` returns `{}`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autohas_edge.common.fs import atomic_write_json
from autohas_edge.common.proc import exit_when_gone
from autohas_edge.server.search.config import SearchConfig
from autohas_edge.server.search.progress import ProgressEvent, SearchCancelled
from autohas_edge.server.search.threads import resolve_threads

PROGRESS, STOP, OUTCOME, LOG = (
    "workers.progress.jsonl",
    "workers.stop",
    "workers.outcome.json",
    "workers.log",
)
CONFIG = "workers.config.json"
POLL_S = 0.2


class WorkersFailed(RuntimeError):
    """The search workers exited without a result."""


@dataclasses.dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one multi-node search meet: torchrun's static rendezvous at node 0."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    def __post_init__(self) -> None:
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not in [0, {self.nnodes})")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"master_port {self.master_port} is not a TCP port")

    def torchrun_args(self) -> list[str]:
        """torchrun's options for this node."""
        return [
            f"--nnodes={self.nnodes}",
            f"--node-rank={self.node_rank}",
            f"--master-addr={self.master_addr}",
            f"--master-port={self.master_port}",
        ]


def run(
    config: SearchConfig,
    out_dir: str | Path,
    workers: int,
    on_progress: Callable[[ProgressEvent], None],
    should_stop: Callable[[], bool],
    threads: int = 0,
    rendezvous: Rendezvous | None = None,
) -> dict[str, Any]:
    """Run `config` in `workers` processes; rank 0's result.json dict.

    torchrun runs in its own session, so a terminal's Ctrl-C reaches the caller only, whose
    `should_stop()` then stops every rank at the same step after a checkpoint. `threads`: torch threads
    per worker (0: the usable cores shared among the workers). `rendezvous`: this machine's place in a
    search over several (`workers` is then the workers on this machine); on any node but node 0 the
    result is `{}` (rank 0 has the run). Raises `SearchCancelled` when stopped, `WorkersFailed` when
    the workers end without a result.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (PROGRESS, STOP, OUTCOME):
        (out / name).unlink(missing_ok=True)
    (out / CONFIG).write_text(json.dumps(config.to_json()))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *(rendezvous.torchrun_args() if rendezvous else ["--standalone"]),
        f"--nproc-per-node={workers}",
        "-m",
        "autohas_edge.server.search.launcher",
        "--out",
        str(out),
        "--parent-pid",
        str(os.getpid()),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(resolve_threads(threads, workers)),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    with open(out / LOG, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    progress = _Tail(out / PROGRESS)
    while process.poll() is None:
        for event in progress.read():
            on_progress(ProgressEvent(**event))
        if should_stop():
            (out / STOP).touch()
        time.sleep(POLL_S)
    for event in progress.read():
        on_progress(ProgressEvent(**event))
    if rendezvous and rendezvous.node_rank > 0:
        return _follower_outcome(process.returncode, workers, out)
    outcome = _read_json(out / OUTCOME) or {}
    if outcome.get("status") == "cancelled":
        raise SearchCancelled(outcome.get("message", "cancelled"))
    if process.returncode == 0 and outcome.get("status") == "done":
        for name in (PROGRESS, STOP, OUTCOME, CONFIG):  # workers.log stays, for the record
            (out / name).unlink(missing_ok=True)
        result: dict[str, Any] = json.loads((out / "result.json").read_text())
        return result
    reason = outcome.get("error") or f"exit code {process.returncode}; see {out / LOG}"
    raise WorkersFailed(f"{workers} search workers failed: {reason}")


#: the public name (`autohas_edge.server.search.run_search_workers`)
run_search_workers = run


def _follower_outcome(returncode: int, workers: int, out: Path) -> dict[str, Any]:
    """A node other than node 0: nothing to report when its ranks ended well (stopped ones too)."""
    if returncode != 0:
        raise WorkersFailed(
            f"{workers} search workers failed: exit code {returncode}; see {out / LOG}"
        )
    return {}


class _Tail:
    """New complete JSON lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def rank_main(argv: list[str] | None = None) -> int:
    """One rank: run the search in the run directory's `workers.config.json`; rank 0 reports."""
    from autohas_edge.server.search.runner import run_search

    parser = argparse.ArgumentParser(prog="python -m autohas_edge.server.search.launcher")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    exit_when_gone(args.parent_pid)
    out = args.out
    is_main = int(os.environ.get("RANK", "0")) == 0
    progress = open(out / PROGRESS, "a") if is_main else None  # noqa: SIM115 (open for the whole run)

    def report(event: ProgressEvent) -> None:
        if progress is not None:
            progress.write(json.dumps(dataclasses.asdict(event)) + "\n")
            progress.flush()

    try:
        config = SearchConfig.from_json(json.loads((out / CONFIG).read_text()))
        run_search(config, out, on_progress=report, should_stop=lambda: (out / STOP).exists())
        outcome: dict[str, Any] = {"status": "done"}
    except SearchCancelled as e:
        outcome = {"status": "cancelled", "message": str(e)}
    except Exception as e:
        traceback.print_exc()  # into workers.log
        outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    if is_main:
        atomic_write_json(out / OUTCOME, outcome, indent=1)
    if progress is not None:
        progress.close()
    return 1 if outcome["status"] == "failed" else 0


if __name__ == "__main__":
    sys.exit(rank_main())

"""Where a job's worker runs: a spawned process on this machine (`local`) or a Ray cluster (`ray`).

The job manager asks its executor to `start` a job's worker and gets back a process-like handle, a
message queue and a stop event; it treats the three the same whichever executor made them. Messages are
`(kind, payload)`: "progress" while the job runs, then one of "done" / "cancelled" / "failed" (see
`server.jobs.worker.run_job`); a Ray job also sends "placement" (where it runs or what it waits for).
"""

from __future__ import annotations

import multiprocessing as mp
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from autohas_edge.server.jobs import worker

if TYPE_CHECKING:
    from autohas_edge.server.config import ServerConfig

EXECUTORS = ("local", "ray")


class WorkerHandle(Protocol):
    """The part of `multiprocessing.Process` the job manager uses."""

    @property
    def exitcode(self) -> int | None:
        """The exit code once the worker ended (None while it runs)."""

    def is_alive(self) -> bool:
        """Whether the worker still runs."""

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker to end, at most `timeout` seconds."""

    def terminate(self) -> None:
        """Stop the worker now (no checkpoint)."""

    def kill(self) -> None:
        """Stop the worker now, harder where that differs."""


class StartedWorker(NamedTuple):
    """A started job worker: its handle, its message queue (`get(timeout=...)`) and its stop event."""

    process: WorkerHandle
    messages: Any
    stop: Any


class Executor(Protocol):
    """Starts job workers."""

    def start(self, args: worker.WorkerArgs) -> StartedWorker:
        """Start the worker of one job (raises on failure: the job then fails with the reason)."""

    def close(self) -> None:
        """Release what the executor holds (after its workers have stopped)."""


class LocalExecutor:
    """Each job in a spawned process on this machine (torchrun under it for several search workers)."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # never fork a process that runs gRPC threads

    def start(self, args: worker.WorkerArgs) -> StartedWorker:
        """Spawn `worker.run_job` for `args`."""
        stop, messages = self._ctx.Event(), self._ctx.Queue()
        process = self._ctx.Process(
            target=worker.run_job, args=(args, messages, stop), name=f"autohas-{args.job_id}"
        )
        process.start()
        return StartedWorker(process, messages, stop)

    def close(self) -> None:
        """Nothing to release."""


def make_executor(config: ServerConfig) -> Executor:
    """The executor `config.executor` names (`ray` connects to the cluster now; RuntimeError if it cannot)."""
    if config.executor == "local":
        return LocalExecutor()
    try:
        from autohas_edge.server.jobs.ray_executor import RayExecutor
    except ImportError as e:
        raise RuntimeError(
            f"--executor ray needs Ray on the server: pip install 'autohas-edge[ray]' ({e})"
        ) from e
    return RayExecutor.from_config(config)

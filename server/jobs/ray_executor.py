"""Search jobs on a Ray cluster (`autohas server --executor ray [--ray-address ADDRESS]`).

The server keeps its role (consent snapshot, audit, progress, export, models); only the search moves:
each job becomes one `JobActor` (server/jobs/ray_worker.py) that asks Ray for the job's resources
(`--ray-cpus-per-worker` / `--ray-gpus-per-worker` per search worker, times `--search-workers`, on one
node; several workers run there under torchrun as with `local`). The consented snapshot and the run
directory travel through Ray's object store; the server drops its references once the actor holds them,
so Ray frees them, and the actor deletes its scratch copy when the job ends. Each poll brings back the
worker's messages and changed files, so checkpoints land in the server's data dir: when the job's node
is lost, a new actor resumes the job from its last checkpoint on another node (up to `MAX_RESTARTS`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
from collections import deque
from pathlib import Path, PurePosixPath
from typing import Any

import ray
import ray.exceptions

from autohas_edge.common.fs import atomic_write_bytes
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.errors import FailedPrecondition
from autohas_edge.server.jobs.executor import StartedWorker
from autohas_edge.server.jobs.ray_worker import NOT_SYNCED, JobActor
from autohas_edge.server.jobs.retention import DATASET, PURGE_FILE
from autohas_edge.server.jobs.worker import WorkerArgs

log = logging.getLogger(__name__)

POLL_S = 0.2  # how long one poll waits on the node for the worker's next message
POLL_TIMEOUT_S = 60.0  # a poll that does not answer by then is retried (the node may be busy)
MAX_RESTARTS = 3  # new nodes a job may resume on after losing one
SECRET_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD")
SERVER_ONLY = frozenset({DATASET, PURGE_FILE, "audit.json"})  # a node never overwrites these
_RemoteJobActor = ray.remote(JobActor)


def forwarded_env() -> dict[str, str]:
    """The server's AUTOHAS_* settings a job's worker inherits (as a local worker does), secrets left out."""
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith("AUTOHAS_") and not any(w in k for w in SECRET_WORDS)
    }


def describe(resources: dict[str, float]) -> str:
    """`{"CPU": 2.0, "GPU": 1.0}` as "2 CPU, 1 GPU"."""
    return ", ".join(f"{v:g} {k}" for k, v in resources.items() if v) or "no resources"


def placement_blocker(resources: dict[str, float]) -> str:
    """Why no node of the cluster could ever run a job asking for `resources` ("" if one could)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(all(n["Resources"].get(k, 0.0) >= v for k, v in resources.items()) for n in nodes):
        return ""
    have = "; ".join(
        f"{n['NodeID'][:8]} ({n['NodeManagerAddress']}) "
        + ", ".join(f"{n['Resources'].get(k, 0.0):g} {k}" for k in resources)
        for n in nodes
    )
    return (
        f"no node of the Ray cluster has {describe(resources)} for this job (nodes: {have or 'none'}); "
        "lower --ray-cpus-per-worker, --ray-gpus-per-worker or --search-workers, or add a node"
    )


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConnectionError unless a `host:port` cluster address answers (Ray itself would wait for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "", "auto", "ray://...": Ray resolves these itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} ({e})") from e


def read_run_files(job_dir: Path) -> dict[str, bytes]:
    """The job's run directory (its last checkpoint) by path relative to the job dir."""
    run = job_dir / "run"
    return {
        p.relative_to(job_dir).as_posix(): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.name.endswith(".tmp")
    }


def write_synced(job_dir: Path, files: dict[str, bytes]) -> None:
    """Write files a node sent back into the job dir (atomically), refusing any path outside it."""
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or rel.startswith("/") or ".." in parts or rel in SERVER_ONLY | NOT_SYNCED:
            log.warning("ignored a synced file with a bad path %r in %s", rel, job_dir)
            continue
        atomic_write_bytes(job_dir / rel, data)


class RayExecutor:
    """Starts each job as a `JobActor` on the Ray cluster (see the module docstring)."""

    def __init__(
        self,
        address: str = "",
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        scratch_dir: str = "",
    ) -> None:
        self._connected_here = not ray.is_initialized()
        if self._connected_here:
            check_reachable(address)
            ray.init(address=address or None, log_to_driver=False, namespace="autohas")
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker
        self.scratch_dir = scratch_dir

    @classmethod
    def from_config(cls, config: ServerConfig) -> RayExecutor:
        """The executor `config` describes (`ray_gpus_per_worker` -1: 1 with CUDA, else 0)."""
        gpus = config.ray_gpus_per_worker
        if gpus < 0:
            gpus = 1.0 if config.search_device == "cuda" else 0.0
        try:
            return cls(config.ray_address, config.ray_cpus_per_worker, gpus, config.ray_scratch_dir)
        except ConnectionError as e:
            raise RuntimeError(f"--ray-address {config.ray_address!r}: {e}") from e

    def resources(self, workers: int) -> dict[str, float]:
        """What a job of `workers` search workers asks Ray for."""
        return {"CPU": self.cpus_per_worker * workers, "GPU": self.gpus_per_worker * workers}

    def start(self, args: WorkerArgs) -> StartedWorker:
        """Submit the job; FailedPrecondition if no node could ever hold it."""
        job = RayJob(self, args)
        return StartedWorker(job, job, RayStop(job))

    def close(self) -> None:
        """Disconnect from the cluster if this executor connected (its actors die with the connection)."""
        if self._connected_here and ray.is_initialized():
            ray.shutdown()


class RayStop:
    """The stop event of a Ray job: setting it asks the job to checkpoint and stop."""

    def __init__(self, job: RayJob) -> None:
        self._job, self._set = job, False

    def set(self) -> None:
        """Ask the job to stop."""
        self._set = True
        self._job.request_stop()

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._set


class RayJob:
    """One job on the cluster: the process handle and message queue the job manager reads.

    `get` is called by the job's monitor thread only; `request_stop` / `terminate` by others.
    """

    def __init__(self, executor: RayExecutor, args: WorkerArgs) -> None:
        self._executor, self._args = executor, args
        self._job_dir = Path(args.run_dir).parent
        self._resources = executor.resources(args.workers)
        self._buffer: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._stopping = self._killed = False
        self._restarts = 0
        self._node = ""
        self._actor: Any = None  # the JobActor handle
        self._ready: Any = None  # its pending `begin` call, until the job is placed
        self.exitcode: int | None = None
        self._place()

    # the queue the manager reads -------------------------------------------------------------------
    def get(self, timeout: float = POLL_S) -> tuple[str, Any]:
        """The next message, polling the node when none is buffered; queue.Empty if none came."""
        if not self._buffer and not self._ended.is_set():
            self._fill(timeout)
        if self._buffer:
            return self._buffer.popleft()
        raise queue.Empty

    # the process handle ----------------------------------------------------------------------------
    def is_alive(self) -> bool:
        """Whether the job has not ended yet."""
        return not self._ended.is_set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the job to end (its monitor thread reads its final message)."""
        self._ended.wait(timeout)

    def terminate(self) -> None:
        """Stop the job now without a checkpoint: the node deletes its scratch copy, then the actor dies."""
        with self._lock:
            self._killed = True
            actor = self._actor
        # a dead node's scratch directory is swept by the next actor started on its host
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            ray.get(actor.discard.remote(), timeout=10)
        ray.kill(actor, no_restart=True)

    kill = terminate

    def request_stop(self) -> None:
        """Ask the worker to checkpoint and stop; a job still waiting for resources ends at once."""
        with self._lock:
            self._stopping = True
            waiting = self._ready is not None
            actor = self._actor
        if waiting:
            ray.kill(actor, no_restart=True)  # its submitted data is released with it
            self._end([("cancelled", None)])
        else:
            actor.stop.remote()

    # internals --------------------------------------------------------------------------------------
    def _place(self) -> None:
        """Submit an actor with the job's resources, its snapshot and its run dir (the last checkpoint)."""
        blocker = placement_blocker(self._resources)
        if blocker:
            raise FailedPrecondition(blocker)
        options: dict[str, Any] = {"max_concurrency": 4, "max_restarts": 0}
        options["num_cpus"], options["num_gpus"] = self._resources["CPU"], self._resources["GPU"]
        actor: Any = _RemoteJobActor.options(**options).remote(
            self._args.job_id, self._executor.scratch_dir, forwarded_env()
        )
        dataset = ray.put(Path(self._args.dataset).read_bytes())
        files = ray.put(read_run_files(self._job_dir))
        with self._lock:
            self._actor, self._ready = actor, actor.begin.remote(self._args, dataset, files)
        # the pending call holds the data now; once it ran, nothing does and Ray frees it
        del dataset, files
        self._buffer.append(("placement", f"waiting for {describe(self._resources)} on Ray"))

    def _fill(self, timeout: float) -> None:
        """Wait for placement or poll the node; buffer what comes back."""
        with self._lock:
            ready, actor = self._ready, self._actor
        try:
            if ready is not None:
                self._await_placement(ready, timeout)
                return
            messages, files, ended = ray.get(actor.poll.remote(timeout), timeout=POLL_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return  # a busy node or a restarting connection: poll again
        except ray.exceptions.RayActorError as e:
            self._lost(e)
            return
        except ray.exceptions.RayError as e:  # the actor's own code raised
            self._end([("failed", f"the job's Ray worker failed: {_first_line(e)}")])
            return
        write_synced(self._job_dir, files)
        if ended:
            self._end(messages)
        else:
            self._buffer.extend(messages)

    def _await_placement(self, ready: Any, timeout: float) -> None:
        done, _ = ray.wait([ready], timeout=timeout)
        if not done:
            return
        where = ray.get(ready)
        with self._lock:
            if self._ready is ready:
                self._ready = None
        self._node = f"node {where['node_id'][:8]} ({where['ip']})"
        self._buffer.append(("placement", self._node))

    def _lost(self, error: ray.exceptions.RayActorError) -> None:
        """The actor died: resume on another node unless the job was stopping or lost too many."""
        reason = _death_reason(error)
        if self._killed or self._stopping or self._restarts >= MAX_RESTARTS:
            self._end([("failed", f"the job's Ray worker died: {reason}")])
            return
        self._restarts += 1
        log.warning("job %s: %s; resuming it on another node", self._args.job_id, reason)
        try:
            self._place()
        except Exception as e:  # e.g. the only node that could hold it is gone
            self._end([("failed", f"{reason}; cannot resume it: {e}")])
            return
        lost = self._node or "its node"
        self._buffer.append(
            ("placement", f"lost {lost}; waiting for {describe(self._resources)} to resume")
        )

    def _end(self, messages: list[tuple[str, Any]]) -> None:
        """Buffer the final messages, release the actor and mark the job ended (once)."""
        if self._ended.is_set():
            return
        self._buffer.extend(messages)
        self.exitcode = 0
        with self._lock:
            actor, self._ready = self._actor, None
        ray.kill(actor, no_restart=True)
        self._ended.set()


def _lines(error: Exception) -> list[str]:
    return [line.strip() for line in str(error).splitlines() if line.strip()] or [
        type(error).__name__
    ]


def _first_line(error: Exception) -> str:
    """A Ray error's first line (its message runs over many, with a traceback)."""
    return _lines(error)[0]


def _death_reason(error: ray.exceptions.RayActorError) -> str:
    """The line of a Ray actor error that says why it died."""
    lines = _lines(error)
    return next((line for line in lines if line.startswith("The actor died because")), lines[0])

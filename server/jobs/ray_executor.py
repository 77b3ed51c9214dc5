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
import dataclasses
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
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

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
FOLLOWER_CHECK_S = 15.0  # after rank 0 failed: a rank > 0 that does not answer by then is lost
DISCARD_S = 10.0  # how long a released job waits for its nodes to delete their scratch copies
WELL = ("done", "cancelled")  # a worker's final messages that are not a failure
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


def placement_blocker(bundle: dict[str, float], count: int = 1) -> str:
    """Why the cluster could never hold `count` workers of `bundle` each ("" if it could).

    One worker must fit on one node; several may share a node or spread over several.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    room = sum(_workers_fitting(n["Resources"], bundle) for n in nodes)
    if room >= count:
        return ""
    have = "; ".join(
        f"{n['NodeID'][:8]} ({n['NodeManagerAddress']}) "
        + ", ".join(f"{n['Resources'].get(k, 0.0):g} {k}" for k in bundle)
        for n in nodes
    )
    if count == 1:
        wanted = f"no node of the Ray cluster has {describe(bundle)} for this job"
    else:
        wanted = (
            f"the Ray cluster has no room for {count} search workers of {describe(bundle)} each"
        )
    return (
        f"{wanted} (nodes: {have or 'none'}); "
        "lower --ray-cpus-per-worker, --ray-gpus-per-worker or --search-workers, or add a node"
    )


def _workers_fitting(have: dict[str, float], bundle: dict[str, float]) -> int:
    """How many workers of `bundle` one node of `have` resources holds."""
    needed = [(have.get(k, 0.0), v) for k, v in bundle.items() if v > 0]
    return min((int(h / v + 1e-9) for h, v in needed), default=1 << 30)


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

    def worker_bundle(self) -> dict[str, float]:
        """What one search worker asks Ray for (a job of N workers asks for N such bundles)."""
        return {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}

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

    A job of one search worker is one `JobActor` with the worker's resources. A job of N > 1 workers
    asks for a placement group of N bundles (PACK: as few nodes as possible, several when no node has
    room) and runs one actor per bundle; each actor is a torchrun node of one rank, meeting at rank 0's
    node (`launcher.Rendezvous`), so the ranks form one torch.distributed group across the nodes. Rank
    0's actor reports and syncs files back; the others are watched, and the loss of any of them resumes
    the whole job from its last checkpoint.

    `get` is called by the job's monitor thread only; `request_stop` / `terminate` by others.
    """

    def __init__(self, executor: RayExecutor, args: WorkerArgs) -> None:
        self._executor, self._args = executor, args
        self._job_dir = Path(args.run_dir).parent
        self._ranks = max(1, args.workers)
        self._bundle = executor.worker_bundle()
        self._buffer: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._stopping = self._killed = False
        self._restarts = 0
        self._node = ""
        self._actors: list[Any] = []  # JobActor handles, in rank order
        self._group: Any = None  # the placement group of a multi-worker job
        self._ready: list[Any] | None = None  # pending placement calls, until the job is placed
        # the snapshot and run files in the object store, until every rank's actor holds them
        self._data: tuple[Any, Any] | None = None
        self._watch: dict[int, Any] = {}  # rank -> its pending poll (ranks > 0)
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
        """Stop the job now without a checkpoint: the nodes delete their scratch copies, the actors die."""
        with self._lock:
            self._killed = True
        self._release()

    kill = terminate

    def request_stop(self) -> None:
        """Ask the worker to checkpoint and stop; a job still waiting for resources ends at once."""
        with self._lock:
            self._stopping = True
            waiting = self._ready is not None
            actors = list(self._actors)
        if waiting:  # its submitted data is released with its actors
            self._end([("cancelled", None)], discard=False)
        else:
            actors[0].stop.remote()  # rank 0 stops every rank at the same step

    # internals --------------------------------------------------------------------------------------
    def _place(self) -> None:
        """Submit the job's actors with its resources; rank 0 gets the run dir (the last checkpoint)."""
        blocker = placement_blocker(self._bundle, self._ranks)
        if blocker:
            raise FailedPrecondition(blocker)
        group = None
        if self._ranks > 1:
            group = placement_group([self._bundle] * self._ranks, strategy="PACK")
        actors = [self._new_actor(group, rank) for rank in range(self._ranks)]
        data = (
            ray.put(Path(self._args.dataset).read_bytes()),
            ray.put(read_run_files(self._job_dir)),
        )
        with self._lock:
            self._actors, self._group, self._watch = actors, group, {}
            if group is None:  # the pending call holds the data; once it ran, Ray frees it
                self._ready = [actors[0].begin.remote(self._args, *data)]
            else:  # rank 0's address first: the other ranks meet there
                self._ready, self._data = [actors[0].endpoint.remote()], data
        del data
        self._buffer.append(("placement", f"waiting for {self._asking()} on Ray"))

    def _asking(self) -> str:
        """What the job waits for: "1 CPU", "2 workers of 1 CPU"."""
        asking = describe(self._bundle)
        return f"{self._ranks} workers of {asking}" if self._ranks > 1 else asking

    def _new_actor(self, group: Any, rank: int) -> Any:
        options: dict[str, Any] = {"max_concurrency": 4, "max_restarts": 0}
        options["num_cpus"], options["num_gpus"] = self._bundle["CPU"], self._bundle["GPU"]
        if group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=rank
            )
        job_id = self._args.job_id if rank == 0 else f"{self._args.job_id}-rank{rank}"
        return _RemoteJobActor.options(**options).remote(
            job_id, self._executor.scratch_dir, forwarded_env()
        )

    def _rank_args(self, rank: int, endpoint: dict[str, Any]) -> WorkerArgs:
        """One rank's worker: a torchrun node of one worker, meeting at rank 0's endpoint."""
        meeting = {
            "nnodes": self._ranks,
            "node_rank": rank,
            "master_addr": endpoint["ip"],
            "master_port": int(endpoint["port"]),
        }
        threads = max(1, int(self._bundle["CPU"]))  # the CPUs Ray gave this worker
        return dataclasses.replace(self._args, workers=1, rendezvous=meeting, threads=threads)

    def _fill(self, timeout: float) -> None:
        """Wait for placement or poll the nodes; buffer what comes back."""
        with self._lock:
            ready, actors = self._ready, self._actors
        try:
            if ready is not None:
                self._await_placement(ready, timeout)
                return
            if not self._followers_well():
                return
            messages, files, ended = ray.get(actors[0].poll.remote(timeout), timeout=POLL_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return  # a busy node or a restarting connection: poll again
        except ray.exceptions.RayActorError as e:
            self._lost(e)
            return
        except ray.exceptions.RayError as e:  # the actor's own code raised
            self._end([("failed", f"the job's Ray worker failed: {_first_line(e)}")])
            return
        write_synced(self._job_dir, files)
        if ended and messages[-1][0] not in WELL and self._a_follower_is_lost():
            return  # rank 0 failed because another rank's node went: resumed instead
        if ended:
            self._end(messages)
        else:
            self._buffer.extend(messages)

    def _followers_well(self) -> bool:
        """Look at the ranks > 0 without waiting: False once one is lost or failed (then handled)."""
        with self._lock:
            actors = list(self._actors)
        for rank in range(1, len(actors)):
            pending = self._watch.get(rank)
            if pending is _DONE:
                continue
            if pending is None:
                self._watch[rank] = actors[rank].poll.remote(1.0)
                continue
            if not ray.wait([pending], timeout=0)[0]:
                continue
            try:
                messages, files, ended = ray.get(pending)
            except ray.exceptions.RayActorError as e:
                self._lost(e, rank)
                return False
            write_synced(self._job_dir / "ranks" / str(rank), files)  # its logs, for the record
            if ended and messages[-1][0] not in WELL:
                kind, detail = messages[-1]
                self._end([("failed", f"search worker {rank} failed: {detail or kind}")])
                return False
            if ended:
                self._watch[rank] = _DONE
            else:
                self._watch[rank] = actors[rank].poll.remote(1.0)
        return True

    def _a_follower_is_lost(self) -> bool:
        """After rank 0 failed: whether a rank > 0 died (then the job resumes elsewhere)."""
        with self._lock:
            actors = list(self._actors)
        for rank in range(1, len(actors)):
            try:
                ray.get(actors[rank].poll.remote(0.0), timeout=FOLLOWER_CHECK_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                error = e if isinstance(e, ray.exceptions.RayActorError) else None
                self._lost(error, rank)
                return True
        return False

    def _await_placement(self, ready: list[Any], timeout: float) -> None:
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout)
        if len(done) < len(ready):
            return
        answers = ray.get(ready)
        if self._data is not None:  # rank 0's endpoint: now start every rank
            self._begin_ranks(answers[0])
            return
        with self._lock:
            if self._ready is ready:
                self._ready = None
        self._node = where(answers)
        self._buffer.append(("placement", self._node))

    def _begin_ranks(self, endpoint: dict[str, Any]) -> None:
        with self._lock:
            actors, data, self._data = self._actors, self._data, None
            assert data is not None
            dataset, files = data
            begins = [
                actor.begin.remote(
                    self._rank_args(rank, endpoint), dataset, files if rank == 0 else {}
                )
                for rank, actor in enumerate(actors)
            ]
            self._ready = begins
        del data, dataset, files  # the pending calls hold them now

    def _lost(self, error: ray.exceptions.RayActorError | None, rank: int = 0) -> None:
        """An actor died: resume on other nodes unless the job was stopping or lost too many."""
        reason = _death_reason(error) if error else f"search worker {rank} stopped answering"
        if rank:
            reason = f"search worker {rank}: {reason}"
        if self._killed or self._stopping or self._restarts >= MAX_RESTARTS:
            self._end([("failed", f"the job's Ray worker died: {reason}")])
            return
        self._restarts += 1
        log.warning("job %s: %s; resuming it on other nodes", self._args.job_id, reason)
        self._release()  # the survivors delete their scratch copies
        try:
            self._place()
        except Exception as e:  # e.g. the only node that could hold it is gone
            self._end([("failed", f"{reason}; cannot resume it: {e}")])
            return
        lost = self._node or "its node"
        self._buffer.append(("placement", f"lost {lost}; waiting for {self._asking()} to resume"))

    def _release(self, discard: bool = True) -> None:
        """Delete the scratch copies on the nodes still there (`discard`), kill every actor, free the
        resources. A dead node's copy is swept by the next actor started on its host."""
        with self._lock:
            actors, group = list(self._actors), self._group
            self._ready = self._data = None
            self._watch = {}
        if discard:
            discards = [a.discard.remote() for a in actors]
            ray.wait(discards, num_returns=len(discards), timeout=DISCARD_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(group)

    def _end(self, messages: list[tuple[str, Any]], discard: bool = True) -> None:
        """Buffer the final messages, release the actors and mark the job ended (once)."""
        if self._ended.is_set():
            return
        self._buffer.extend(messages)
        self.exitcode = 0
        self._release(discard)
        self._ended.set()


_DONE: Any = object()  # a rank > 0 whose worker ended well (nothing more to poll)


def where(nodes: list[dict[str, str]]) -> str:
    """Where a job's ranks run: "node 1a2b3c4d (10.0.0.5)", or "nodes a (ip) x2, b (ip)" for several."""
    counts: dict[str, int] = {}
    for n in nodes:
        key = f"{n['node_id'][:8]} ({n['ip']})"
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1:
        return f"node {next(iter(counts))}"
    return "nodes " + ", ".join(k + (f" x{c}" if c > 1 else "") for k, c in counts.items())


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

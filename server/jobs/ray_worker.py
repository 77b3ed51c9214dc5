"""What runs on a Ray node for one job (`--executor ray`): an actor around the usual job worker process.

The actor gets the job's consented snapshot and its run directory (the last checkpoint) from the server
through Ray's object store, writes them into a private scratch directory on its node, and runs
`worker.run_job` there in a spawned process exactly as the local executor does. The server's `poll`
takes the worker's messages and the files that changed since the last poll (checkpoint, result, model,
log), so the server's data dir always holds the newest checkpoint. The scratch directory is deleted when
the job ends; one left by an actor that was killed is deleted by the next actor started on that host.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from autohas_edge.common.fs import file_stamp
from autohas_edge.common.proc import process_identity
from autohas_edge.server.jobs.executor import LocalExecutor, StartedWorker
from autohas_edge.server.jobs.retention import DATASET
from autohas_edge.server.jobs.worker import WorkerArgs

OWNER = "owner"  # "<pid> <process identity>" of the actor that owns a scratch directory
NOT_SYNCED = frozenset({DATASET, OWNER})  # the server has the snapshot; the owner is the node's own
MAX_MESSAGES = 1000  # per poll
Message = tuple[str, Any]


def sweep_stale(root: Path) -> None:
    """Delete the scratch directories under `root` whose owning actor is gone (killed with its job)."""
    for path in root.iterdir() if root.is_dir() else ():
        try:
            pid, identity = (path / OWNER).read_text().split()
        except (OSError, ValueError):
            continue  # not ours, or being created
        if process_identity(int(pid)) != identity:
            shutil.rmtree(path, ignore_errors=True)


def node_info() -> dict[str, str]:
    """The Ray node this process runs on: node_id, ip, host."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return {"node_id": node_id, "ip": ray.util.get_node_ip_address(), "host": socket.gethostname()}


class JobActor:
    """One job's relay on a node (made a Ray actor by `server.jobs.ray_executor`)."""

    def __init__(self, job_id: str, scratch_root: str, env: dict[str, str]) -> None:
        os.environ.update(env)
        root = Path(scratch_root or tempfile.gettempdir()) / "autohas-ray-jobs"
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        sweep_stale(root)
        self._dir = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=root))
        (self._dir / OWNER).write_text(f"{os.getpid()} {process_identity(os.getpid())}")
        self._sent: dict[str, tuple[int, int, int]] = {}
        self._worker: StartedWorker | None = None
        self._stop_wanted = False
        self._lock = threading.Lock()

    def begin(self, args: WorkerArgs, dataset: bytes, files: dict[str, bytes]) -> dict[str, str]:
        """Write the snapshot and run files, start the job's worker; returns where it runs."""
        snapshot = self._dir / DATASET
        fd = os.open(snapshot, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(dataset)
        for rel, data in files.items():
            path = self._dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self._sent = self._stamps()  # the server has these already
        local = dataclasses.replace(
            args, dataset=str(snapshot), run_dir=str(self._dir / "run"), parent_pid=os.getpid()
        )
        with self._lock:
            self._worker = LocalExecutor().start(local)
            if self._stop_wanted:
                self._worker.stop.set()
        return node_info()

    def endpoint(self) -> dict[str, Any]:
        """Where the other ranks of a multi-node job meet this one: its node's address, a free port."""
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        return {**node_info(), "port": port}

    def poll(self, wait: float) -> tuple[list[Message], dict[str, bytes], bool]:
        """The worker's new messages, the files changed since the last poll, and whether it ended.

        Once it ended the scratch directory (snapshot included) is already deleted.
        """
        assert self._worker is not None, "poll before begin"
        messages = self._drain(self._worker, wait)
        ended = bool(messages) and messages[-1][0] != "progress"
        if ended:
            self._worker.process.join(timeout=10)
        files = self._changed()
        if ended:
            self.discard()
        return messages, files, ended

    def stop(self) -> None:
        """Ask the worker to checkpoint and stop at its next step."""
        with self._lock:
            self._stop_wanted = True
            if self._worker is not None:
                self._worker.stop.set()

    def discard(self) -> None:
        """Stop the worker at once and delete the scratch directory (the server kills the actor next)."""
        with self._lock:
            if self._worker is not None and self._worker.process.is_alive():
                self._worker.process.kill()
                self._worker.process.join(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _drain(self, w: StartedWorker, wait: float) -> list[Message]:
        """Messages waiting in the worker's queue (waiting up to `wait` s for the first)."""
        messages: list[Message] = []
        timeout: float | None = wait
        while len(messages) < MAX_MESSAGES:
            try:
                messages.append(
                    w.messages.get(timeout=timeout) if timeout else w.messages.get_nowait()
                )
            except queue.Empty:
                break
            except (EOFError, OSError, ValueError):  # the worker died mid-message
                break
            if messages[-1][0] != "progress":
                return messages
            timeout = None
        if not w.process.is_alive() and not (messages and messages[-1][0] != "progress"):
            try:  # the final message may still be in the pipe
                messages.append(w.messages.get(timeout=0.5))
            except (queue.Empty, EOFError, OSError, ValueError):
                messages.append(("exited", w.process.exitcode))
        return messages

    def _stamps(self) -> dict[str, tuple[int, int, int]]:
        """(inode, mtime, size) of every file to sync back, by path relative to the scratch dir."""
        stamps = {}
        for path in self._dir.rglob("*"):
            rel = path.relative_to(self._dir).as_posix()
            if rel in NOT_SYNCED or path.name.endswith(".tmp") or not path.is_file():
                continue  # .tmp: half-written (atomic writes rename them into place)
            try:
                stamps[rel] = (*file_stamp(path), path.stat().st_size)
            except FileNotFoundError:
                continue  # replaced while we looked
        return stamps

    def _changed(self) -> dict[str, bytes]:
        """The content of every file changed since the last call."""
        files = {}
        for rel, stamp in self._stamps().items():
            if self._sent.get(rel) == stamp:
                continue
            try:
                files[rel] = (self._dir / rel).read_bytes()
            except FileNotFoundError:
                continue
            self._sent[rel] = stamp
        return files

"""Queues search jobs, runs each in a spawned worker process, and publishes their progress.

gRPC threads only read and enqueue; a scheduler thread snapshots a job's consented data and starts its
worker; one monitor thread per worker turns the worker's messages into job updates. A job that was
running when the server stopped (or was killed) is requeued at start and resumes from its checkpoint.
Revoking consent removes the user's rows from job snapshots (`revoke`; policy in `server.jobs.retention`).
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from autohas_edge.server.domain import Job, JobAudit, JobProgress, JobSpec, JobState, now
from autohas_edge.server.engine import summarize
from autohas_edge.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServerError,
    Unavailable,
)
from autohas_edge.server.jobs import retention, worker
from autohas_edge.server.jobs.executor import Executor, LocalExecutor, WorkerHandle
from autohas_edge.server.jobs.files import sweep_temp_files
from autohas_edge.server.jobs.hub import ProgressHub
from autohas_edge.server.jobs.snapshot import check_cohort, take_snapshot
from autohas_edge.server.store import Store
from autohas_edge.server.store.base import is_full_disk
from autohas_edge.server.tokens import new_id
from autohas_edge.server.validate import check_spec

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 30.0  # a cancelled worker that has not stopped by then is terminated
STORE_PERIOD_S = 1.0  # progress is written to the store at most this often (stage changes always)
PUBLISH_PERIOD_S = 0.05  # and published to watchers at most this often
WATCH_POLL_S = 1.0  # how often a watcher checks that its client is still there
RETRY_S = 5.0  # a job whose state the store could not record (a full disk) is retried this often
T = TypeVar("T")


@dataclass
class _Worker:
    """A running job's process and the channels to it."""

    job_id: str
    process: WorkerHandle
    messages: Any  # multiprocessing.Queue of (kind, payload)
    stop: Any  # multiprocessing.Event
    cancel_at: float | None = None
    pending: JobProgress | None = None  # newest progress not yet published
    published_at: float = 0.0
    stored_at: float = 0.0


class JobManager:
    """Runs search jobs in worker processes, at most `max_running` at a time."""

    def __init__(
        self,
        store: Store,
        jobs_dir: Path,
        engine: str,
        device: str,
        max_running: int,
        max_watchers: int = 8,
        workers: int = 1,
        min_users: int = 1,
        executor: Executor | None = None,
    ) -> None:
        self._store, self._jobs_dir, self._engine, self._device = (
            store,
            Path(jobs_dir),
            engine,
            device,
        )
        self._workers = workers
        self._min_users = min_users  # the minimum cohort of tasks that set none
        self._max_running = max_running
        self._watch_slots = threading.BoundedSemaphore(max_watchers)
        self._hub = ProgressHub()
        self._lock = (
            threading.Condition()
        )  # guards the fields below and every write of a job record
        self._queue: deque[str] = deque()
        self._running: dict[str, _Worker] = {}
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._executor = executor or LocalExecutor()
        self._scheduler: threading.Thread | None = None

    def job_dir(self, job_id: str) -> Path:
        """Where a job keeps its dataset snapshot, audit, log and run directory."""
        return self._jobs_dir / job_id

    def run_dir(self, job_id: str) -> Path:
        """The job's run directory (the engine's checkpoint, result.json and model)."""
        return self.job_dir(job_id) / "run"

    def start(self) -> None:
        """Requeue jobs left running or queued by the last server, then start scheduling.

        Snapshot removals that a revocation recorded while their job ran are applied first (see
        `server.jobs.retention`), and half-taken snapshots of a server that died are deleted.
        """
        jobs = self._store.list_jobs()
        with self._lock:
            # no worker runs yet: any temp file under jobs/ is a write a crash or a full disk cut short
            sweep_temp_files(self._jobs_dir, recursive=True)
            for job in jobs:
                self._tidy_snapshot(job)
            for state in (JobState.RUNNING, JobState.QUEUED):
                self._queue.extend(j.job_id for j in jobs if j.state is state)
            for job in jobs:
                if not job.state.terminal:
                    self._hub.publish(job)
        self._spawn_thread(self._schedule, "job-scheduler")
        self._scheduler = self._threads[-1]

    def submit(self, spec: JobSpec) -> Job:
        """Queue a new job over its task's consented examples (which are snapshotted when it starts)."""
        check_spec(spec)
        try:
            importlib.import_module(self._engine).check_spec(spec.to_dict())
        except ValueError as e:
            field, _, detail = str(e).partition(": ")
            raise InvalidArgument(field, detail) from e
        task = self._store.get_task(spec.task_id)
        if task is None:
            raise NotFound(f"spec.task_id: no task {spec.task_id!r}")
        if self._store.count_examples(spec.task_id) == 0:
            raise FailedPrecondition(
                f"spec.task_id: task {spec.task_id!r} has no consented examples yet"
            )
        check_cohort(self._store, task, self._min_users)
        t = now()
        job = Job(new_id("job"), spec, JobState.QUEUED, t, JobProgress(stage="queued", time=t))
        with self._lock:
            if self._closing:
                raise Unavailable("the server is shutting down")
            self._save(job)
            self._queue.append(job.job_id)
            self._lock.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        """The newest state of a job."""
        job = self._hub.latest(job_id)[1] or self._store.get_job(job_id)
        if job is None:
            raise NotFound(f"job_id: no job {job_id[:128]!r}")
        return job

    def list(self, task_id: str | None = None) -> list[Job]:
        """Jobs, oldest first, optionally only one task's."""
        return [self._hub.latest(j.job_id)[1] or j for j in self._store.list_jobs(task_id)]

    def audit(self, job_id: str) -> JobAudit:
        """Which users' examples a job used."""
        self.get(job_id)
        audit = self._store.get_audit(job_id)
        if audit is None:
            raise FailedPrecondition(
                f"job_id: job {job_id!r} has not started, so it has used no data yet"
            )
        return retention.with_revocations(self._store, audit)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once when queued; a running one stops at its next step (see WatchJob)."""
        with self._lock:
            job = self.get(job_id)
            worker_ = self._running.get(job_id)
            if job.state.terminal:
                return job
            if worker_ is None:
                if job_id in self._queue:
                    self._queue.remove(job_id)
                return self._save(job, state=JobState.CANCELLED, finished_at=now())
            if worker_.cancel_at is None:
                worker_.cancel_at = now()
                worker_.stop.set()
            return job

    def revoke(self, app_id: str, user_id: str, purpose: str, commit: Callable[[float], T]) -> T:
        """Revoke a user's consent by `commit(at)` and remove their rows from the job snapshots of `purpose`.

        The removal is recorded before `commit` runs and applied at once to jobs that are not running
        (running ones: when their worker exits); the policy is in `server.jobs.retention`. Holding the lock
        orders this against snapshots being taken: a snapshot either precedes the revocation (and is purged)
        or follows it (and never sees the user's examples).
        """
        with self._lock:
            affected = self._snapshots_of(app_id, user_id, purpose)
            for job_id in affected:
                retention.request_purge(self.job_dir(job_id), [(app_id, user_id)])
            result = commit(now())
            for job_id in affected:
                if job_id not in self._running:
                    self._apply_purges_logged(job_id)
            self._sweep_job_temps()
            return result

    def export_blocker(self, job_id: str) -> str:
        """Why a finished job can no longer be exported ("" when it can)."""
        if retention.snapshot_deleted(self.job_dir(job_id)):
            return (
                "its data snapshot was deleted after every user in it revoked consent, and export needs "
                "it (int8 calibration, reference inputs); start a new job to get a model"
            )
        return ""

    def attach_model(self, job_id: str, model_id: str) -> None:
        """Record the newest model exported from a finished job in its summary."""
        with self._lock:
            job = self.get(job_id)
            if job.result is not None:
                self._save(job, result=dataclasses.replace(job.result, model_id=model_id))

    def watch(self, job_id: str, is_active: Callable[[], bool]) -> Iterator[Job]:
        """Yield the job now and after each change until it finishes or `is_active()` turns false."""
        seq, job = self._hub.latest(job_id)
        job = job or self.get(job_id)
        if not self._watch_slots.acquire(blocking=False):
            raise ResourceExhausted(
                "job_id: too many WatchJob streams are open; poll GetJob instead"
            )
        try:
            yield job
            while not job.state.terminal and is_active():
                newer_seq, newer = self._hub.wait_newer(job_id, seq, WATCH_POLL_S)
                if newer is not None and newer_seq > seq:
                    seq, job = newer_seq, newer
                    yield job
        finally:
            self._watch_slots.release()

    def close(self, grace: float = 5.0) -> None:
        """Stop scheduling and stop the workers; their jobs stay running in the store and resume at start."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            workers = list(self._running.values())
            self._lock.notify_all()
        for w in workers:
            w.stop.set()
        deadline = time.monotonic() + grace
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.terminate()
        for thread in self._threads:
            thread.join(timeout=grace + 10)
        self._executor.close()

    # internals --------------------------------------------------------------------------------------
    def _spawn_thread(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [
            t for t in self._threads if t.is_alive()
        ]  # one monitor a job: drop finished ones
        self._threads.append(thread)
        thread.start()

    def _save(self, job: Job, persist: bool = True, **changes: Any) -> Job:
        """Apply changes to a job, store them (unless only progress moved) and publish; holds the lock."""
        old_state = self._hub.latest(job.job_id)[1]
        job = dataclasses.replace(job, **changes)
        if persist:
            self._store.put_job(job)
        self._hub.publish(job)
        if old_state is None or old_state.state is not job.state:
            error = f": {job.error}" if job.error and job.state is JobState.FAILED else ""
            log.info(
                "job %s of task %s: %s%s", job.job_id, job.spec.task_id, job.state.value, error
            )
        return job

    def scheduler_alive(self) -> bool:
        """Whether the scheduler thread runs (health reports NOT_SERVING when it does not)."""
        return self._scheduler is not None and self._scheduler.is_alive()

    def _schedule(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(
                    lambda: (
                        self._closing
                        or (bool(self._queue) and len(self._running) < self._max_running)
                    )
                )
                if self._closing:
                    return
                job_id = self._queue.popleft()
                try:
                    self._launch(job_id)
                except Exception as e:  # the store could not even record FAILED: keep it, retry
                    self._retry_later(job_id, e)

    def _retry_later(self, job_id: str, error: Exception) -> None:
        """Requeue a job the store could not record and wait `RETRY_S`; GetJob says why meanwhile."""
        log.warning("could not start job %s (%s); retrying in %.0f s", job_id, error, RETRY_S)
        self._queue.appendleft(job_id)
        job = self._hub.latest(job_id)[1]  # not the store: it may be what failed
        if job is not None:
            reason = f"waiting to start: {_reason(error)}"
            self._save(job, persist=False, error=reason)
        self._lock.wait(RETRY_S)

    def _launch(self, job_id: str) -> None:
        """Snapshot the job's data (first start only) and start its worker; holds the lock."""
        job = self._store.get_job(job_id)
        if job is None or job.state.terminal:
            return
        try:
            dataset = self._dataset(job)
            self._private_run_files(job_id)
            args = worker.WorkerArgs(
                job_id,
                self._engine,
                job.spec.to_dict(),
                str(dataset),
                str(self.run_dir(job_id)),
                self._device,
                os.getpid(),
                self._workers,
            )
            process, messages, stop = self._executor.start(args)
        except Exception as e:
            if is_full_disk(e):
                log.warning("could not start job %s: %s", job_id, _reason(e))
            elif not isinstance(e, ServerError):
                log.exception("could not start job %s", job_id)
            self._save(job, state=JobState.FAILED, error=_reason(e), finished_at=now())
            return
        w = _Worker(job_id, process, messages, stop)
        self._running[job_id] = w
        self._spawn_thread(self._monitor, f"job-monitor-{job_id}", w)
        progress = job.progress if job.started_at else JobProgress(stage="load", time=now())
        self._save_soft(
            job, state=JobState.RUNNING, started_at=job.started_at or now(), progress=progress
        )

    def _private_run_files(self, job_id: str) -> None:
        """Make the run dir (0700) and the worker's log (0600) before the worker does, with their
        default modes (a checkpoint is trained on people's data; a log may quote it)."""
        run = self.run_dir(job_id)
        run.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(run, 0o700)
        log_file = run.parent / "worker.log"
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(log_file, 0o600)

    def _dataset(self, job: Job) -> Path:
        """The job's snapshot `.npz`, taken now unless an earlier start already took it."""
        path = self.job_dir(job.job_id) / retention.DATASET
        if self._store.get_audit(job.job_id) is not None:
            if retention.snapshot_deleted(path.parent):
                raise FailedPrecondition(
                    "every user in the job's data snapshot revoked consent before it "
                    "finished, so the snapshot was deleted; start a new job"
                )
            if not path.exists():
                raise FailedPrecondition(f"the data snapshot {path} of job {job.job_id} is missing")
            return path
        task = self._store.get_task(job.spec.task_id)
        if task is None:
            raise NotFound(f"spec.task_id: no task {job.spec.task_id!r}")
        check_cohort(self._store, task, self._min_users)  # users may have revoked since submit
        self._store.put_audit(take_snapshot(self._store, task, job.job_id, path))
        return path

    def _snapshots_of(self, app_id: str, user_id: str, purpose: str) -> builtins.list[str]:
        """Jobs whose snapshot holds examples of this user in a task of this purpose; holds the lock."""
        jobs = []
        for task in self._store.list_tasks():
            if task.purpose != purpose:
                continue
            for job in self._store.list_jobs(task.task_id):
                audit = self._store.get_audit(job.job_id)
                if audit is None or not (self.job_dir(job.job_id) / retention.DATASET).exists():
                    continue
                if any((u.app_id, u.user_id) == (app_id, user_id) for u in audit.users):
                    jobs.append(job.job_id)
        return jobs

    def _apply_purges(self, job_id: str, finished: bool | None = None) -> None:
        """Apply a stopped job's recorded snapshot removals; an unfinished job then restarts from scratch.

        `finished` says whether the job has ended for good (None: as the store says).
        """
        job_dir = self.job_dir(job_id)
        if not retention.has_pending(job_dir):
            return
        removed = retention.apply_purges(job_dir)
        if finished is None:
            job = self._store.get_job(job_id)
            finished = job is None or job.state.terminal
        if removed and not finished:
            shutil.rmtree(
                self.run_dir(job_id), ignore_errors=True
            )  # its checkpoint saw the removed rows

    def _tidy_snapshot(self, job: Job) -> None:
        """At start: apply pending removals; delete a snapshot whose audit was never recorded (a crash)."""
        job_dir = self.job_dir(job.job_id)
        if not job_dir.exists():
            return
        if self._store.get_audit(job.job_id) is None:
            (job_dir / retention.DATASET).unlink(missing_ok=True)
        else:
            self._apply_purges(job.job_id)

    def _save_soft(self, job: Job, **changes: Any) -> Job:
        """`_save`, but a store that cannot write (a full disk) only delays the record: watchers still
        hear the change, and the next write of the job stores it. Holds the lock."""
        try:
            return self._save(job, **changes)
        except Exception as e:
            log.warning("could not record job %s (%s); it keeps running", job.job_id, e)
            return self._save(job, persist=False, **changes)

    def _record_final(self, job: Job) -> None:
        """Store a job's final state, retrying every `RETRY_S` while the store cannot write; holds the
        lock (released while it waits)."""
        while True:
            try:
                self._save(job)
                return
            except Exception as e:
                log.warning(
                    "could not record job %s as %s (%s); retrying", job.job_id, job.state.value, e
                )
                self._hub.publish(job)  # GetJob and watchers know the outcome meanwhile
                if self._closing:
                    return  # the next start requeues it (still RUNNING in the store)
                self._lock.wait(RETRY_S)

    def _apply_purges_logged(self, job_id: str, finished: bool | None = None) -> None:
        """`_apply_purges`; a failure is logged and the removal stays pending (applied at next start)."""
        try:
            self._apply_purges(job_id, finished)
        except Exception:
            log.exception("could not apply the removals recorded for job %s yet", job_id)

    def _sweep_job_temps(self) -> None:
        """Delete temp files left in job dirs (the server's own files; not running jobs' run dirs)."""
        for job_dir in self._jobs_dir.glob("*/"):
            running = job_dir.name in self._running
            sweep_temp_files(job_dir, recursive=not running)

    def _monitor(self, w: _Worker) -> None:
        try:
            outcome = self._pump(w)
        except Exception as e:  # never leave a worker unreaped and its job RUNNING
            log.exception("lost track of job %s's worker", w.job_id)
            w.process.terminate()
            outcome = ("failed", f"the server lost track of the worker: {e}")
        w.process.join(timeout=10)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        self._finish(w, *outcome)

    def _pump(self, w: _Worker) -> tuple[str, Any]:
        """Relay a worker's progress until its final message (or its death); returns that outcome."""
        while True:
            try:
                kind, payload = w.messages.get(timeout=0.2)
            except queue.Empty:
                if not w.process.is_alive():
                    try:  # the final message may still be in the pipe
                        kind, payload = w.messages.get(timeout=0.5)
                    except queue.Empty:
                        return "exited", w.process.exitcode
                else:
                    self._idle(w)
                    continue
            except (EOFError, OSError, ValueError):  # the worker died mid-message
                return "exited", w.process.exitcode
            if kind == "placement":  # where a Ray job runs or what it waits for
                with self._lock:
                    self._save(self.get(w.job_id), placement=str(payload))
                continue
            if kind != "progress":
                return kind, payload
            self._progress(w, JobProgress.from_dict({**payload, "time": now()}))

    def _idle(self, w: _Worker) -> None:
        if w.pending is not None:
            self._progress(w, w.pending)
        if w.cancel_at is not None and now() - w.cancel_at > CANCEL_GRACE_S:
            w.process.terminate()

    def _progress(self, w: _Worker, progress: JobProgress) -> None:
        t = time.monotonic()
        with self._lock:
            job = self.get(w.job_id)
            new_stage = progress.stage != job.progress.stage
            if not new_stage and t - w.published_at < PUBLISH_PERIOD_S:
                w.pending = progress
                return
            persist = new_stage or t - w.stored_at >= STORE_PERIOD_S
            if persist:
                self._save_soft(job, progress=progress)
            else:
                self._save(job, persist=False, progress=progress)
            w.pending, w.published_at = None, t
            if persist:
                w.stored_at = t

    def _finish(self, w: _Worker, kind: str, payload: Any) -> None:
        with self._lock:
            self._running.pop(w.job_id, None)
            self._lock.notify_all()
            job = self.get(w.job_id)
            if w.pending is not None:
                job = dataclasses.replace(job, progress=w.pending)
            changes = self._outcome(w, job, kind, payload)
            # Revocations recorded while the worker ran, before watchers hear that the job ended.
            self._apply_purges_logged(w.job_id, finished=changes.get("state", job.state).terminal)
            self._record_final(dataclasses.replace(job, **changes))

    def _outcome(self, w: _Worker, job: Job, kind: str, payload: Any) -> dict[str, Any]:
        """The changes to a job whose worker exited with the message `(kind, payload)`."""
        done = {"finished_at": now()}
        if kind == "done":
            return {
                "state": JobState.SUCCEEDED,
                "result": summarize(payload),
                "progress": dataclasses.replace(job.progress, stage="done", time=now()),
                **done,
            }
        if w.cancel_at is not None or (kind == "cancelled" and not self._closing):
            return {"state": JobState.CANCELLED, **done}
        if self._closing:
            return {}  # keep RUNNING with its newest progress: the next start resumes it
        if kind == "failed":
            return {"state": JobState.FAILED, "error": str(payload), **done}
        return {
            "state": JobState.FAILED,
            "error": f"worker process exited with code {payload}",
            **done,
        }


def _reason(error: Exception) -> str:
    """Why a job could not start, for its `error` field."""
    if is_full_disk(error) and not isinstance(error, ServerError):
        return f"the server's disk is full: could not write the job's data snapshot ({error})"
    return str(error)

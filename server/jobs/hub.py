"""Latest state of each job, and a way to wait for the next change (what WatchJob streams)."""

from __future__ import annotations

import threading

from autohas_edge.server.domain import Job


class ProgressHub:
    """Keeps the newest `Job` value of each job with a sequence number; watchers wait for a newer one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._latest: dict[str, tuple[int, Job]] = {}
        self._seq = 0

    def publish(self, job: Job) -> None:
        """Make `job` the newest value of its job and wake the watchers."""
        with self._changed:
            self._seq += 1
            self._latest[job.job_id] = (self._seq, job)
            self._changed.notify_all()

    def latest(self, job_id: str) -> tuple[int, Job | None]:
        """The newest value of a job and its sequence number ((0, None) when never published)."""
        with self._changed:
            return self._latest.get(job_id, (0, None))

    def wait_newer(self, job_id: str, seq: int, timeout: float) -> tuple[int, Job | None]:
        """Block until the job has a value newer than `seq` or `timeout` passes; returns the newest."""
        with self._changed:
            self._changed.wait_for(lambda: self._latest.get(job_id, (0, None))[0] > seq, timeout)
            return self._latest.get(job_id, (0, None))

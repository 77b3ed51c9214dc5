"""Search jobs: a queue, worker processes, progress for watchers, consent-checked data snapshots."""

from server.jobs.manager import JobManager

__all__ = ["JobManager"]

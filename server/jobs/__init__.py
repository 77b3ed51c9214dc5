"""Search jobs: a queue, worker processes, progress for watchers, consent-checked data snapshots."""

from autohas_edge.server.jobs.manager import JobManager

__all__ = ["JobManager"]

"""A small Python client for the OperatorService: what an ML platform team scripts against."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc

MODES = {"joint": pb.SEARCH_MODE_JOINT, "nas": pb.SEARCH_MODE_NAS, "hpo": pb.SEARCH_MODE_HPO}


class OperatorClient:
    """Operator calls over one channel, with the operator token attached to each."""

    def __init__(self, address: str, token: str, timeout: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.OperatorServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_task(self, task: pb.Task) -> pb.Task:
        """Declare a task devices can upload to."""
        created: pb.Task = self._stub.CreateTask(
            pb.CreateTaskRequest(task=task), metadata=self._metadata, timeout=self.timeout
        )
        return created

    def start_job(
        self,
        task_id: str,
        *,
        mode: str = "joint",
        steps: int = 0,
        retrain_steps: int = 0,
        max_params: int = 0,
        seed: int = 0,
    ) -> pb.Job:
        """Start a search over the task's consented data."""
        spec = pb.JobSpec(
            task_id=task_id,
            mode=MODES[mode],
            steps=steps,
            retrain_steps=retrain_steps,
            max_params=max_params,
            seed=seed,
        )
        job: pb.Job = self._stub.StartJob(
            pb.StartJobRequest(spec=spec), metadata=self._metadata, timeout=self.timeout
        )
        return job

    def watch(self, job_id: str) -> Iterator[pb.JobProgress]:
        """Stream the job's progress until it ends."""
        progress: Iterator[pb.JobProgress] = self._stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=self._metadata
        )
        return progress

    def job(self, job_id: str) -> pb.Job:
        """The job as it is now."""
        job: pb.Job = self._stub.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=self._metadata, timeout=self.timeout
        )
        return job

    def audit(self, job_id: str) -> pb.JobAudit:
        """Which users' examples the job used."""
        audit: pb.JobAudit = self._stub.GetJobAudit(
            pb.GetJobRequest(job_id=job_id), metadata=self._metadata, timeout=self.timeout
        )
        return audit

    def export(self, job_ids: Sequence[str], formats: Sequence[str]) -> pb.ExportModelsResponse:
        """Export finished jobs' models to verified bundles (waits for the exports)."""
        request = pb.ExportModelsRequest(job_ids=list(job_ids), formats=list(formats))
        response: pb.ExportModelsResponse = self._stub.ExportModels(
            request, metadata=self._metadata, timeout=30 * self.timeout
        )
        return response

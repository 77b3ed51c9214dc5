"""OperatorService: what an ML platform team calls. Each method makes one core call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc
from autohas_edge.server.api import serde
from autohas_edge.server.examples import Examples
from autohas_edge.server.jobs import JobManager
from autohas_edge.server.models import ModelRegistry

Ctx = grpc.ServicerContext
log = logging.getLogger(__name__)


class OperatorServicer(pb_grpc.OperatorServiceServicer):
    """The operator RPCs; the auth interceptor lets only the operator token through."""

    def __init__(self, examples: Examples, jobs: JobManager, models: ModelRegistry) -> None:
        self._examples, self._jobs, self._models = examples, jobs, models

    def CreateTask(self, request: pb.CreateTaskRequest, context: Ctx) -> pb.Task:
        return serde.task_to_proto(self._examples.create_task(serde.task_from_proto(request.task)))

    def ListTasks(self, request: pb.ListTasksRequest, context: Ctx) -> pb.ListTasksResponse:
        return pb.ListTasksResponse(
            tasks=[serde.task_to_proto(t) for t in self._examples.list_tasks()]
        )

    def StartJob(self, request: pb.StartJobRequest, context: Ctx) -> pb.Job:
        return serde.job_to_proto(self._jobs.submit(serde.spec_from_proto(request.spec)))

    def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.Job:
        return serde.job_to_proto(self._jobs.get(request.job_id))

    def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        jobs = self._jobs.list(request.task_id or None)
        return pb.ListJobsResponse(jobs=[serde.job_to_proto(j) for j in jobs])

    def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.Job:
        return serde.job_to_proto(self._jobs.cancel(request.job_id))

    def WatchJob(self, request: pb.WatchJobRequest, context: Ctx) -> Iterator[pb.JobProgress]:
        for job in self._jobs.watch(request.job_id, context.is_active):
            yield serde.progress_to_proto(job.job_id, job.state, job.progress)

    def GetJobAudit(self, request: pb.GetJobRequest, context: Ctx) -> pb.JobAudit:
        return serde.audit_to_proto(self._jobs.audit(request.job_id))

    def ExportModels(
        self, request: pb.ExportModelsRequest, context: Ctx
    ) -> pb.ExportModelsResponse:
        outcomes = self._models.export(self._jobs, list(request.job_ids), list(request.formats))
        for o in outcomes:
            if o.model is not None:
                formats = ",".join(o.model.formats)
                log.info("export: job %s -> model %s (%s)", o.job_id, o.model.model_id, formats)
            else:
                log.info("export of job %s failed: %s", o.job_id, o.error)
        return pb.ExportModelsResponse(results=[serde.export_outcome_to_proto(o) for o in outcomes])

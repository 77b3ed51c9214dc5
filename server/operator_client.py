"""A Python client for the OperatorService: what an ML platform team scripts against (and what
`autohas tasks|jobs|models|audit` use), over TLS or plaintext, the operator token on every call."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import grpc

from autohas_edge.common.fs import sha256_file
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc

MODES = {"joint": pb.SEARCH_MODE_JOINT, "nas": pb.SEARCH_MODE_NAS, "hpo": pb.SEARCH_MODE_HPO}


def open_channel(
    address: str, tls: bool | None = None, root_cert: Path | None = None
) -> grpc.Channel:
    """A channel to `address`: TLS with `root_cert` (PEM of the CA that signed the server's
    certificate; the system's roots without it) unless the server is on this machine (a loopback
    address, `localhost`, a `unix:` socket) or `tls` is False; `tls=True` forces it on loopback.
    `tls=False` with a `root_cert` is a contradiction and a ValueError."""
    from autohas_edge.device_sdk.client import is_loopback

    if tls is False and root_cert is not None:
        raise ValueError("a root certificate was given with TLS turned off")
    if tls is None:
        tls = root_cert is not None or not is_loopback(address)
    if not tls:
        return grpc.insecure_channel(address)
    roots = root_cert.read_bytes() if root_cert else None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))


class OperatorClient:
    """Operator calls over one channel, with the operator token attached to each."""

    def __init__(
        self,
        address: str,
        token: str,
        timeout: float = 30.0,
        *,
        tls: bool | None = None,
        root_cert: Path | None = None,
    ) -> None:
        self._channel = open_channel(address, tls, root_cert)
        self._stub = pb_grpc.OperatorServiceStub(self._channel)
        self._device = pb_grpc.DeviceServiceStub(self._channel)  # models: list, manifest, download
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

    def list_tasks(self) -> list[pb.Task]:
        """Every task."""
        reply = self._stub.ListTasks(
            pb.ListTasksRequest(), metadata=self._metadata, timeout=self.timeout
        )
        return list(reply.tasks)

    def start_job(
        self,
        task_id: str,
        *,
        mode: str = "joint",
        steps: int = 0,
        retrain_steps: int = 0,
        max_params: int = 0,
        seed: int = 0,
        strategy: str = "",
        max_flops: int = 0,
        max_latency_ms: float = 0.0,
        within_points: float = 0.0,
    ) -> pb.Job:
        """Start a search over the task's consented data (0 / "": the server's default)."""
        spec = pb.JobSpec(
            task_id=task_id,
            mode=MODES[mode],
            steps=steps,
            retrain_steps=retrain_steps,
            max_params=max_params,
            seed=seed,
            strategy=strategy,
            max_flops=max_flops,
            max_latency_ms=max_latency_ms,
            within_points=within_points,
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

    def revoke_device(self, device_id: str) -> pb.RevokeDeviceResponse:
        """Revoke a device's token (a lost or stolen phone): it authenticates no more."""
        device = pb_grpc.DeviceServiceStub(self._channel)
        reply: pb.RevokeDeviceResponse = device.RevokeDevice(
            pb.RevokeDeviceRequest(device_id=device_id),
            metadata=self._metadata,
            timeout=self.timeout,
        )
        return reply

    def job(self, job_id: str) -> pb.Job:
        """The job as it is now."""
        job: pb.Job = self._stub.GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=self._metadata, timeout=self.timeout
        )
        return job

    def list_jobs(self, task_id: str = "") -> list[pb.Job]:
        """The jobs of a task (every task's when empty)."""
        reply = self._stub.ListJobs(
            pb.ListJobsRequest(task_id=task_id), metadata=self._metadata, timeout=self.timeout
        )
        return list(reply.jobs)

    def cancel(self, job_id: str) -> pb.Job:
        """Ask a queued or running job to stop (it checkpoints first)."""
        job: pb.Job = self._stub.CancelJob(
            pb.CancelJobRequest(job_id=job_id), metadata=self._metadata, timeout=self.timeout
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

    def list_models(self, task_id: str) -> list[pb.ModelInfo]:
        """The exported models of a task."""
        reply = self._device.ListModels(
            pb.ListModelsRequest(task_id=task_id), metadata=self._metadata, timeout=self.timeout
        )
        return list(reply.models)

    def manifest(self, model_id: str = "", task_id: str = "") -> pb.ModelManifest:
        """A model's manifest and file table (`task_id` alone: the task's latest model)."""
        request = pb.GetModelManifestRequest(model_id=model_id, task_id=task_id)
        manifest: pb.ModelManifest = self._device.GetModelManifest(
            request, metadata=self._metadata, timeout=self.timeout
        )
        return manifest

    def download(self, manifest: pb.ModelManifest, dest: Path) -> list[Path]:
        """Write every file of the model to `dest`, each checked against its SHA-256."""
        written = []
        for file in manifest.files:
            target = dest / _relative(file.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with open(target, "wb") as out:
                for chunk in self._device.DownloadModel(
                    pb.DownloadModelRequest(model_id=manifest.model.model_id, path=file.path),
                    metadata=self._metadata,
                    timeout=30 * self.timeout,
                ):
                    out.write(chunk.data)
                    digest.update(chunk.data)
            if digest.hexdigest() != file.sha256 or sha256_file(target) != file.sha256:
                raise ValueError(f"{file.path}: SHA-256 differs from the manifest's")
            written.append(target)
        return written


def _relative(path: str) -> PurePosixPath:
    """A bundle file's path, refused if it could leave the destination."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"refusing the bundle path {path!r}")
    return pure

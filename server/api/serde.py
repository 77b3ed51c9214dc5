"""Every conversion between protobuf messages and domain values, as paired `x_to_proto` / `x_from_proto`.

`_from_proto` functions raise `InvalidArgument` naming the field when a message cannot be a domain value.
"""

from __future__ import annotations

import math
from typing import cast

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from autohas_edge.common.tensor import (
    DTYPE_CODES,
    DTYPE_NAMES,
    TensorError,
    decode_tensor,
    encode_tensor,
)
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.domain import (
    Consent,
    Encoding,
    ExampleBatch,
    Job,
    JobAudit,
    JobProgress,
    JobSpec,
    JobState,
    ModelFile,
    ModelInfo,
    ModelSummary,
    Task,
    UserCount,
)
from autohas_edge.server.errors import InvalidArgument
from autohas_edge.server.examples import UploadResult
from autohas_edge.server.models import ExportOutcome

_MODE_TO_PROTO = {
    "joint": pb.SEARCH_MODE_JOINT,
    "nas": pb.SEARCH_MODE_NAS,
    "hpo": pb.SEARCH_MODE_HPO,
}
_MODE_FROM_PROTO = {
    **{v: k for k, v in _MODE_TO_PROTO.items()},
    pb.SEARCH_MODE_UNSPECIFIED: "joint",
}
_STATE_TO_PROTO = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_STATE_FROM_PROTO: dict[int, JobState] = {v: k for k, v in _STATE_TO_PROTO.items()}


def timestamp_to_proto(t: float | None) -> Timestamp | None:
    """Seconds since the epoch as a Timestamp (None stays unset)."""
    if t is None:
        return None
    seconds = math.floor(t)  # split first: t * 1e9 as a float would lose the nanoseconds
    nanos = round((t - seconds) * 1e9)
    return Timestamp(seconds=seconds + nanos // 10**9, nanos=nanos % 10**9)


def timestamp_from_proto(msg: object, field: str) -> float | None:
    """A message's Timestamp field in seconds since the epoch, None when unset."""
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(msg, field)
    return ts.seconds + ts.nanos / 1e9


def dtype_to_proto(name: str) -> pb.DType:
    """A numpy dtype name as a DType value (DTYPE_UNSPECIFIED for "")."""
    return cast(pb.DType, DTYPE_CODES.get(name, pb.DTYPE_UNSPECIFIED))


def dtype_from_proto(value: int) -> str:
    """A DType value as a numpy dtype name ("" when unspecified or unknown)."""
    return DTYPE_NAMES.get(value, "")


def tensor_to_proto(array: np.ndarray) -> pb.Tensor:
    """A numpy array as a little-endian row-major Tensor; ValueError naming an unsendable dtype."""
    wire = encode_tensor(array)
    return pb.Tensor(dtype=cast(pb.DType, wire.dtype), shape=list(wire.shape), data=wire.data)


def tensor_from_proto(msg: pb.Tensor, field: str) -> np.ndarray:
    """A Tensor as a read-only numpy array; its dtype, shape and byte count must agree."""
    try:
        return decode_tensor(msg.dtype, msg.shape, msg.data)
    except TensorError as e:
        raise InvalidArgument(f"{field}.{e.part}", str(e)) from None
    # numpy refuses the shape itself: sizes whose product overflows (`[0, 2**62]`)
    except ValueError:
        shape = list(msg.shape)[:8]
        raise InvalidArgument(f"{field}.shape", f"{shape} is too large for any tensor") from None


def task_to_proto(task: Task) -> pb.Task:
    """A Task as its message."""
    return pb.Task(
        task_id=task.task_id,
        app_ids=task.app_ids,
        purpose=task.purpose,
        input_shape=task.input_shape,
        input_dtype=dtype_to_proto(task.input_dtype),
        num_classes=task.num_classes,
        label_names=task.label_names,
        created_at=timestamp_to_proto(task.created_at),
        min_users=task.min_users,
        layout=task.layout,
    )


def task_from_proto(msg: pb.Task) -> Task:
    """A Task message as a (not yet validated) Task."""
    return Task(
        msg.task_id,
        tuple(msg.app_ids),
        msg.purpose,
        tuple(msg.input_shape),
        dtype_from_proto(msg.input_dtype),
        msg.num_classes,
        tuple(msg.label_names),
        timestamp_from_proto(msg, "created_at") or 0.0,
        msg.min_users,
        msg.layout,
    )


def consent_to_proto(consent: Consent) -> pb.Consent:
    """A Consent as its message."""
    return pb.Consent(
        user_id=consent.user_id,
        purpose=consent.purpose,
        consent_text_version=consent.consent_text_version,
        granted_at=timestamp_to_proto(consent.granted_at),
        revoked_at=timestamp_to_proto(consent.revoked_at),
        active=consent.active,
    )


def consent_from_proto(msg: pb.Consent, app_id: str = "") -> Consent:
    """A Consent message as a Consent (the message does not carry the app)."""
    return Consent(
        app_id,
        msg.user_id,
        msg.purpose,
        msg.consent_text_version,
        timestamp_from_proto(msg, "granted_at") or 0.0,
        timestamp_from_proto(msg, "revoked_at"),
    )


def batch_to_proto(batch: ExampleBatch) -> pb.ExampleBatch:
    """An ExampleBatch as its message."""
    return pb.ExampleBatch(
        batch_id=batch.batch_id,
        task_id=batch.task_id,
        features=tensor_to_proto(batch.features),
        labels=batch.labels.tolist(),
    )


def batch_from_proto(msg: pb.ExampleBatch) -> ExampleBatch:
    """An ExampleBatch message as an ExampleBatch (checked against its task later)."""
    if not msg.HasField("features"):
        raise InvalidArgument("features", "required")
    labels = np.asarray(msg.labels, dtype=np.int64)
    return ExampleBatch(
        msg.batch_id, msg.task_id, tensor_from_proto(msg.features, "features"), labels
    )


def upload_result_to_proto(result: UploadResult) -> pb.UploadSummary:
    """An UploadResult as an UploadSummary."""
    return pb.UploadSummary(
        stored_batch_ids=result.stored_batch_ids,
        duplicate_batch_ids=result.duplicate_batch_ids,
        examples_stored=result.examples_stored,
    )


def upload_result_from_proto(msg: pb.UploadSummary) -> UploadResult:
    """An UploadSummary as an UploadResult."""
    return UploadResult(
        list(msg.stored_batch_ids), list(msg.duplicate_batch_ids), msg.examples_stored
    )


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    """A JobSpec as its message."""
    return pb.JobSpec(
        task_id=spec.task_id,
        mode=_MODE_TO_PROTO[spec.mode],
        strategy=spec.strategy,
        steps=spec.steps,
        max_params=spec.max_params,
        seed=spec.seed,
        validation_fraction=spec.validation_fraction,
        test_fraction=spec.test_fraction,
        retrain_steps=spec.retrain_steps,
        max_flops=spec.max_flops,
        max_latency_ms=spec.max_latency_ms,
        within_points=spec.within_points,
    )


def spec_from_proto(msg: pb.JobSpec) -> JobSpec:
    """A JobSpec message as a (not yet validated) JobSpec."""
    if msg.mode not in _MODE_FROM_PROTO:
        raise InvalidArgument("spec.mode", f"unknown mode {msg.mode}")
    return JobSpec(
        msg.task_id,
        _MODE_FROM_PROTO[msg.mode],
        msg.strategy,
        msg.steps,
        msg.max_params,
        msg.seed,
        msg.validation_fraction,
        msg.test_fraction,
        msg.retrain_steps,
        msg.max_flops,
        msg.max_latency_ms,
        msg.within_points,
    )


def state_to_proto(state: JobState) -> pb.JobState:
    """A JobState as its enum value."""
    return _STATE_TO_PROTO[state]


def state_from_proto(value: int) -> JobState:
    """A JobState enum value as a JobState."""
    if value not in _STATE_FROM_PROTO:
        raise InvalidArgument("state", f"unknown job state {value}")
    return _STATE_FROM_PROTO[value]


def progress_to_proto(job_id: str, state: JobState, progress: JobProgress) -> pb.JobProgress:
    """A job's progress as a JobProgress message."""
    encodings = [
        pb.EncodingValue(name=e.name, candidates=e.candidates, probabilities=e.probabilities)
        for e in progress.encodings
    ]
    return pb.JobProgress(
        job_id=job_id,
        state=state_to_proto(state),
        stage=progress.stage,
        step=progress.step,
        total_steps=progress.total_steps,
        train_loss=progress.train_loss,
        val_loss=progress.val_loss,
        learning_rate=progress.learning_rate,
        encodings=encodings,
        time=timestamp_to_proto(progress.time),
    )


def progress_from_proto(msg: pb.JobProgress) -> tuple[str, JobState, JobProgress]:
    """A JobProgress message as (job id, state, progress)."""
    encodings = tuple(
        Encoding(e.name, tuple(e.candidates), tuple(e.probabilities)) for e in msg.encodings
    )
    progress = JobProgress(
        msg.stage,
        msg.step,
        msg.total_steps,
        msg.train_loss,
        msg.val_loss,
        msg.learning_rate,
        encodings,
        timestamp_from_proto(msg, "time") or 0.0,
    )
    return msg.job_id, state_from_proto(msg.state), progress


def summary_to_proto(summary: ModelSummary) -> pb.ModelSummary:
    """A ModelSummary as its message."""
    return pb.ModelSummary(
        model_id=summary.model_id,
        architecture=dict(summary.architecture),
        hyperparameters=dict(summary.hyperparameters),
        params=summary.params,
        test_accuracy=summary.test_accuracy,
        search_seconds=summary.search_seconds,
        retrain_seconds=summary.retrain_seconds,
        race_seconds=summary.race_seconds,
    )


def summary_from_proto(msg: pb.ModelSummary) -> ModelSummary:
    """A ModelSummary message as a ModelSummary."""
    return ModelSummary(
        msg.model_id,
        dict(msg.architecture),
        dict(msg.hyperparameters),
        msg.params,
        msg.test_accuracy,
        msg.search_seconds,
        msg.retrain_seconds,
        msg.race_seconds,
    )


def job_to_proto(job: Job) -> pb.Job:
    """A Job as its message."""
    return pb.Job(
        job_id=job.job_id,
        spec=spec_to_proto(job.spec),
        state=state_to_proto(job.state),
        progress=progress_to_proto(job.job_id, job.state, job.progress),
        result=None if job.result is None else summary_to_proto(job.result),
        error=job.error,
        created_at=timestamp_to_proto(job.created_at),
        started_at=timestamp_to_proto(job.started_at),
        finished_at=timestamp_to_proto(job.finished_at),
        placement=job.placement,
    )


def job_from_proto(msg: pb.Job) -> Job:
    """A Job message as a Job."""
    return Job(
        msg.job_id,
        spec_from_proto(msg.spec),
        state_from_proto(msg.state),
        timestamp_from_proto(msg, "created_at") or 0.0,
        progress_from_proto(msg.progress)[2],
        summary_from_proto(msg.result) if msg.HasField("result") else None,
        msg.error,
        timestamp_from_proto(msg, "started_at"),
        timestamp_from_proto(msg, "finished_at"),
        msg.placement,
    )


def audit_to_proto(audit: JobAudit) -> pb.JobAudit:
    """A JobAudit as its message."""
    users = [
        pb.UserExampleCount(
            app_id=u.app_id,
            user_id=u.user_id,
            examples=u.examples,
            consent_text_version=u.consent_text_version,
            consent_revoked_at=timestamp_to_proto(u.revoked_at),
        )
        for u in audit.users
    ]
    return pb.JobAudit(
        job_id=audit.job_id,
        task_id=audit.task_id,
        purpose=audit.purpose,
        snapshot_at=timestamp_to_proto(audit.snapshot_at),
        users=users,
        total_examples=audit.total_examples,
    )


def audit_from_proto(msg: pb.JobAudit) -> JobAudit:
    """A JobAudit message as a JobAudit."""
    users = tuple(
        UserCount(
            u.app_id,
            u.user_id,
            u.examples,
            u.consent_text_version,
            timestamp_from_proto(u, "consent_revoked_at"),
        )
        for u in msg.users
    )
    snapshot_at = timestamp_from_proto(msg, "snapshot_at") or 0.0
    return JobAudit(msg.job_id, msg.task_id, msg.purpose, snapshot_at, users)


def model_info_to_proto(info: ModelInfo) -> pb.ModelInfo:
    """A ModelInfo as its message."""
    return pb.ModelInfo(
        model_id=info.model_id,
        task_id=info.task_id,
        job_id=info.job_id,
        formats=info.formats,
        created_at=timestamp_to_proto(info.created_at),
    )


def model_info_from_proto(msg: pb.ModelInfo) -> ModelInfo:
    """A ModelInfo message as a ModelInfo."""
    return ModelInfo(
        msg.model_id,
        msg.task_id,
        msg.job_id,
        tuple(msg.formats),
        timestamp_from_proto(msg, "created_at") or 0.0,
    )


def model_file_to_proto(file: ModelFile) -> pb.ModelFile:
    """A ModelFile as its message."""
    return pb.ModelFile(path=file.path, sha256=file.sha256, bytes=file.bytes)


def model_file_from_proto(msg: pb.ModelFile) -> ModelFile:
    """A ModelFile message as a ModelFile."""
    return ModelFile(msg.path, msg.sha256, msg.bytes)


def export_outcome_to_proto(outcome: ExportOutcome) -> pb.ExportResult:
    """An ExportOutcome as an ExportResult."""
    model = None if outcome.model is None else model_info_to_proto(outcome.model)
    ok = outcome.model is not None
    return pb.ExportResult(job_id=outcome.job_id, ok=ok, error=outcome.error, model=model)


def export_outcome_from_proto(msg: pb.ExportResult) -> ExportOutcome:
    """An ExportResult as an ExportOutcome."""
    model = model_info_from_proto(msg.model) if msg.HasField("model") else None
    return ExportOutcome(msg.job_id, model, msg.error)

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
    DTYPE_FLOAT16: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_JOINT: _ClassVar[SearchMode]
    SEARCH_MODE_NAS: _ClassVar[SearchMode]
    SEARCH_MODE_HPO: _ClassVar[SearchMode]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
DTYPE_UNSPECIFIED: DType
DTYPE_FLOAT32: DType
DTYPE_FLOAT16: DType
DTYPE_INT8: DType
DTYPE_UINT8: DType
DTYPE_INT32: DType
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_JOINT: SearchMode
SEARCH_MODE_NAS: SearchMode
SEARCH_MODE_HPO: SearchMode
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterDeviceRequest(_message.Message):
    __slots__ = ("app_id", "user_id", "device_name", "enrollment_ticket")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_TICKET_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    user_id: str
    device_name: str
    enrollment_ticket: str
    def __init__(self, app_id: _Optional[str] = ..., user_id: _Optional[str] = ..., device_name: _Optional[str] = ..., enrollment_ticket: _Optional[str] = ...) -> None: ...

class RegisterDeviceResponse(_message.Message):
    __slots__ = ("device_id", "device_token")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    device_token: str
    def __init__(self, device_id: _Optional[str] = ..., device_token: _Optional[str] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("user_id", "purpose", "consent_text_version", "granted_at", "revoked_at", "active")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    purpose: str
    consent_text_version: str
    granted_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    active: bool
    def __init__(self, user_id: _Optional[str] = ..., purpose: _Optional[str] = ..., consent_text_version: _Optional[str] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active: _Optional[bool] = ...) -> None: ...

class GrantConsentRequest(_message.Message):
    __slots__ = ("purpose", "consent_text_version")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    consent_text_version: str
    def __init__(self, purpose: _Optional[str] = ..., consent_text_version: _Optional[str] = ...) -> None: ...

class RevokeConsentRequest(_message.Message):
    __slots__ = ("purpose",)
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    def __init__(self, purpose: _Optional[str] = ...) -> None: ...

class RevokeConsentResponse(_message.Message):
    __slots__ = ("consent", "examples_deleted")
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_DELETED_FIELD_NUMBER: _ClassVar[int]
    consent: Consent
    examples_deleted: int
    def __init__(self, consent: _Optional[_Union[Consent, _Mapping]] = ..., examples_deleted: _Optional[int] = ...) -> None: ...

class ListConsentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevokeDeviceRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class RevokeDeviceResponse(_message.Message):
    __slots__ = ("device_id", "revoked_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[str] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListConsentsResponse(_message.Message):
    __slots__ = ("consents",)
    CONSENTS_FIELD_NUMBER: _ClassVar[int]
    consents: _containers.RepeatedCompositeFieldContainer[Consent]
    def __init__(self, consents: _Optional[_Iterable[_Union[Consent, _Mapping]]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "app_ids", "purpose", "input_shape", "input_dtype", "num_classes", "label_names", "created_at", "min_users", "layout")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    APP_IDS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MIN_USERS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    app_ids: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_dtype: DType
    num_classes: int
    label_names: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    min_users: int
    layout: str
    def __init__(self, task_id: _Optional[str] = ..., app_ids: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_dtype: _Optional[_Union[DType, str]] = ..., num_classes: _Optional[int] = ..., label_names: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_users: _Optional[int] = ..., layout: _Optional[str] = ...) -> None: ...

class CreateTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class ExampleBatch(_message.Message):
    __slots__ = ("batch_id", "task_id", "features", "labels")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    task_id: str
    features: Tensor
    labels: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, batch_id: _Optional[str] = ..., task_id: _Optional[str] = ..., features: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ...) -> None: ...

class UploadSummary(_message.Message):
    __slots__ = ("stored_batch_ids", "duplicate_batch_ids", "examples_stored")
    STORED_BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_STORED_FIELD_NUMBER: _ClassVar[int]
    stored_batch_ids: _containers.RepeatedScalarFieldContainer[str]
    duplicate_batch_ids: _containers.RepeatedScalarFieldContainer[str]
    examples_stored: int
    def __init__(self, stored_batch_ids: _Optional[_Iterable[str]] = ..., duplicate_batch_ids: _Optional[_Iterable[str]] = ..., examples_stored: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("task_id", "mode", "strategy", "steps", "max_params", "seed", "validation_fraction", "test_fraction", "retrain_steps", "max_flops", "max_latency_ms", "within_points")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FLOPS_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    WITHIN_POINTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    mode: SearchMode
    strategy: str
    steps: int
    max_params: int
    seed: int
    validation_fraction: float
    test_fraction: float
    retrain_steps: int
    max_flops: int
    max_latency_ms: float
    within_points: float
    def __init__(self, task_id: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., strategy: _Optional[str] = ..., steps: _Optional[int] = ..., max_params: _Optional[int] = ..., seed: _Optional[int] = ..., validation_fraction: _Optional[float] = ..., test_fraction: _Optional[float] = ..., retrain_steps: _Optional[int] = ..., max_flops: _Optional[int] = ..., max_latency_ms: _Optional[float] = ..., within_points: _Optional[float] = ...) -> None: ...

class EncodingValue(_message.Message):
    __slots__ = ("name", "candidates", "probabilities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Iterable[float]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("job_id", "state", "stage", "step", "total_steps", "train_loss", "val_loss", "learning_rate", "encodings", "time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    stage: str
    step: int
    total_steps: int
    train_loss: float
    val_loss: float
    learning_rate: float
    encodings: _containers.RepeatedCompositeFieldContainer[EncodingValue]
    time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., train_loss: _Optional[float] = ..., val_loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., encodings: _Optional[_Iterable[_Union[EncodingValue, _Mapping]]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("model_id", "architecture", "hyperparameters", "params", "test_accuracy", "search_seconds", "retrain_seconds", "race_seconds")
    class ArchitectureEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    architecture: _containers.ScalarMap[str, str]
    hyperparameters: _containers.ScalarMap[str, str]
    params: int
    test_accuracy: float
    search_seconds: float
    retrain_seconds: float
    race_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., architecture: _Optional[_Mapping[str, str]] = ..., hyperparameters: _Optional[_Mapping[str, str]] = ..., params: _Optional[int] = ..., test_accuracy: _Optional[float] = ..., search_seconds: _Optional[float] = ..., retrain_seconds: _Optional[float] = ..., race_seconds: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "progress", "result", "error", "created_at", "started_at", "finished_at", "placement")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    state: JobState
    progress: JobProgress
    result: ModelSummary
    error: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    placement: str
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., result: _Optional[_Union[ModelSummary, _Mapping]] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placement: _Optional[str] = ...) -> None: ...

class StartJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class UserExampleCount(_message.Message):
    __slots__ = ("user_id", "examples", "app_id", "consent_text_version", "consent_revoked_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    CONSENT_TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    examples: int
    app_id: str
    consent_text_version: str
    consent_revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., examples: _Optional[int] = ..., app_id: _Optional[str] = ..., consent_text_version: _Optional[str] = ..., consent_revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobAudit(_message.Message):
    __slots__ = ("job_id", "task_id", "purpose", "snapshot_at", "users", "total_examples")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AT_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    task_id: str
    purpose: str
    snapshot_at: _timestamp_pb2.Timestamp
    users: _containers.RepeatedCompositeFieldContainer[UserExampleCount]
    total_examples: int
    def __init__(self, job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., purpose: _Optional[str] = ..., snapshot_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., users: _Optional[_Iterable[_Union[UserExampleCount, _Mapping]]] = ..., total_examples: _Optional[int] = ...) -> None: ...

class ModelFile(_message.Message):
    __slots__ = ("path", "sha256", "bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    bytes: int
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "task_id", "job_id", "formats", "created_at")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    task_id: str
    job_id: str
    formats: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, model_id: _Optional[str] = ..., task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., formats: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelManifestRequest(_message.Message):
    __slots__ = ("model_id", "task_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    task_id: str
    def __init__(self, model_id: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class ModelManifest(_message.Message):
    __slots__ = ("model", "manifest_json", "files")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    manifest_json: str
    files: _containers.RepeatedCompositeFieldContainer[ModelFile]
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., manifest_json: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ModelFile, _Mapping]]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("model_id", "path", "offset", "chunk_bytes")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    path: str
    offset: int
    chunk_bytes: int
    def __init__(self, model_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "offset", "data", "total_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    data: bytes
    total_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ExportModelsRequest(_message.Message):
    __slots__ = ("job_ids", "formats")
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    formats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_ids: _Optional[_Iterable[str]] = ..., formats: _Optional[_Iterable[str]] = ...) -> None: ...

class ExportResult(_message.Message):
    __slots__ = ("job_id", "ok", "error", "model")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ok: bool
    error: str
    model: ModelInfo
    def __init__(self, job_id: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ExportModelsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ExportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ExportResult, _Mapping]]] = ...) -> None: ...

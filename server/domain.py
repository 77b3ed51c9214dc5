"""The server's domain values: frozen dataclasses with no dependency on gRPC or the search engine."""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEARCH_MODES = ("joint", "nas", "hpo")
EXPORT_FORMATS = ("onnx", "tflite", "onnx-int8", "tflite-int8")


def now() -> float:
    """Wall-clock time in seconds since the epoch (UTC), the unit of every timestamp here."""
    return time.time()


@dataclass(frozen=True)
class Device:
    """A registered device, bound to one app and one of that app's users."""

    device_id: str
    app_id: str
    user_id: str
    name: str
    token_hash: str
    created_at: float
    revoked_at: float | None = None  # set once its token was revoked (RevokeDevice)


@dataclass(frozen=True)
class Consent:
    """One grant of consent by a user of an app for a purpose; `revoked_at` is None while active."""

    app_id: str
    user_id: str
    purpose: str
    consent_text_version: str
    granted_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the consent is still in force."""
        return self.revoked_at is None


@dataclass(frozen=True)
class Task:
    """A learning problem that devices contribute examples to and that jobs search on."""

    task_id: str
    app_ids: tuple[str, ...]
    purpose: str
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int
    label_names: tuple[str, ...] = ()
    created_at: float = 0.0
    min_users: int = 0  # a job needs this many distinct consented users (0: the server's default)
    layout: str = ""  # tabular, signal or image ("": by the rank of input_shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        """Inverse of `to_dict`."""
        return cls(
            d["task_id"],
            tuple(d["app_ids"]),
            d["purpose"],
            tuple(d["input_shape"]),
            d["input_dtype"],
            int(d["num_classes"]),
            tuple(d["label_names"]),
            float(d["created_at"]),
            int(d.get("min_users", 0)),
            str(d.get("layout", "")),  # tasks stored before layouts have none
        )


@dataclass(frozen=True, eq=False)
class ExampleBatch:
    """One uploaded batch: `features` is `[n, *task.input_shape]`, `labels` is `[n]` int64."""

    batch_id: str
    task_id: str
    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class StoredBatch:
    """An example batch as the store keeps it: raw bytes plus who uploaded it and its digest."""

    device_id: str
    batch_id: str
    task_id: str
    app_id: str
    user_id: str
    count: int
    dtype: str
    shape: tuple[int, ...]
    features: bytes = field(repr=False)
    labels: bytes = field(repr=False)  # int64 little-endian
    digest: str
    created_at: float


class JobState(str, enum.Enum):
    """Life cycle of a search job."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job has finished for good."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobSpec:
    """What to search: a task's consented data plus the engine's budget; zeros mean engine defaults."""

    task_id: str
    mode: str = "joint"
    strategy: str = ""
    steps: int = 0
    max_params: int = 0
    seed: int = 0
    validation_fraction: float = 0.0
    test_fraction: float = 0.0
    retrain_steps: int = 0
    max_flops: int = 0
    max_latency_ms: float = 0.0
    within_points: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSpec:
        """Inverse of `to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class Encoding:
    """One searched choice's current distribution over its candidates."""

    name: str
    candidates: tuple[str, ...]
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class JobProgress:
    """The latest progress report of a job."""

    stage: str = "queued"
    step: int = 0
    total_steps: int = 0
    train_loss: float = 0.0
    val_loss: float = 0.0
    learning_rate: float = 0.0
    encodings: tuple[Encoding, ...] = ()
    time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobProgress:
        """Inverse of `to_dict`; also accepts the worker's progress messages."""
        encodings = tuple(
            Encoding(e["name"], tuple(e["candidates"]), tuple(float(p) for p in e["probabilities"]))
            for e in d.get("encodings", ())
        )
        return cls(
            str(d.get("stage", "")),
            int(d.get("step", 0)),
            int(d.get("total_steps", 0)),
            float(d.get("train_loss", 0.0)),
            float(d.get("val_loss", 0.0)),
            float(d.get("learning_rate", 0.0)),
            encodings,
            float(d.get("time", 0.0)),
        )


@dataclass(frozen=True)
class ModelSummary:
    """What a finished search derived: the model's choices and its test metrics."""

    model_id: str = ""
    architecture: Mapping[str, str] = field(default_factory=dict)
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    params: int = 0
    test_accuracy: float = 0.0
    search_seconds: float = 0.0
    retrain_seconds: float = 0.0
    race_seconds: float = 0.0  # the training race (`server.search.race`); 0 in older records

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            **dataclasses.asdict(self),
            "architecture": dict(self.architecture),
            "hyperparameters": dict(self.hyperparameters),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSummary:
        """Inverse of `to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class Job:
    """A search job and everything known about it."""

    job_id: str
    spec: JobSpec
    state: JobState
    created_at: float
    progress: JobProgress = JobProgress()
    result: ModelSummary | None = None
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    # where it runs or what it waits for (`--executor ray`); "" on the local executor
    placement: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "job_id": self.job_id,
            "spec": self.spec.to_dict(),
            "state": self.state.value,
            "created_at": self.created_at,
            "progress": self.progress.to_dict(),
            "result": None if self.result is None else self.result.to_dict(),
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "placement": self.placement,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """Inverse of `to_dict`."""
        result = None if d["result"] is None else ModelSummary.from_dict(d["result"])
        return cls(
            d["job_id"],
            JobSpec.from_dict(d["spec"]),
            JobState(d["state"]),
            d["created_at"],
            JobProgress.from_dict(d["progress"]),
            result,
            d["error"],
            d["started_at"],
            d["finished_at"],
            d.get("placement", ""),  # records written before it existed have none
        )


@dataclass(frozen=True)
class UserCount:
    """How many examples of one user (of one app) a job used, and the consent text they agreed to."""

    app_id: str
    user_id: str
    examples: int
    consent_text_version: str = ""
    revoked_at: float | None = None  # when the user revoked that consent after the snapshot


@dataclass(frozen=True)
class JobAudit:
    """Which users' data a job used: only users with active consent when its snapshot was taken."""

    job_id: str
    task_id: str
    purpose: str
    snapshot_at: float
    users: tuple[UserCount, ...] = ()

    @property
    def total_examples(self) -> int:
        """Examples in the snapshot, all users together."""
        return sum(u.examples for u in self.users)


@dataclass(frozen=True)
class ModelFile:
    """One file of an exported bundle."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelInfo:
    """An exported model: a bundle directory under the data dir."""

    model_id: str
    task_id: str
    job_id: str
    formats: tuple[str, ...]
    created_at: float

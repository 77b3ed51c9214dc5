"""Every serde pair round-trips (domain -> proto -> domain), and malformed messages name their field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autohas_edge.common.tensor import DTYPES
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.api import serde
from autohas_edge.server.domain import (
    SEARCH_MODES,
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

text = st.text(max_size=12)
ids = st.from_regex(r"[a-z][a-z0-9.-]{0,10}", fullmatch=True)
times = st.floats(1e9, 4e9)  # epoch seconds: ns resolution is finer than a float's there
maybe_time = st.none() | times
reals = st.floats(allow_nan=False, allow_infinity=False, width=64)
i32 = st.integers(0, 2**31 - 1)
i64 = st.integers(0, 2**62)
str_map = st.dictionaries(ids, text, max_size=3)

tasks = st.builds(
    Task,
    ids,
    st.tuples(ids, ids),
    ids,
    st.tuples(i32, i32),
    st.sampled_from(list(DTYPES)),
    i32,
    st.tuples(text, text),
    times,
    st.integers(0, 1000),  # min_users
    st.sampled_from(["", "tabular", "signal", "image"]),
)
consents = st.builds(Consent, st.just(""), ids, ids, ids, times, maybe_time)
specs = st.builds(
    JobSpec,
    ids,
    st.sampled_from(SEARCH_MODES),
    ids,
    i32,
    i64,
    i64,
    reals,
    reals,
    i32,
    i64,
    reals,
    reals,
)
encodings = st.builds(Encoding, ids, st.tuples(ids, ids), st.tuples(reals, reals))
progresses = st.builds(JobProgress, ids, i32, i32, reals, reals, reals, st.tuples(encodings), times)
summaries = st.builds(ModelSummary, ids, str_map, str_map, i64, reals, reals, reals, reals)
jobs = st.builds(
    Job,
    ids,
    specs,
    st.sampled_from(list(JobState)),
    times,
    progresses,
    st.none() | summaries,
    text,
    maybe_time,
    maybe_time,
    text,  # placement
)
audits = st.builds(
    JobAudit, ids, ids, ids, times, st.tuples(st.builds(UserCount, ids, ids, i64, ids))
)
model_infos = st.builds(ModelInfo, ids, ids, ids, st.tuples(ids), times)
model_files = st.builds(ModelFile, text, text, i64)
uploads = st.builds(UploadResult, st.lists(ids, max_size=3), st.lists(ids, max_size=3), i64)
outcomes = st.builds(ExportOutcome, ids, st.none() | model_infos, text)


@settings(max_examples=50)
@given(
    task=tasks,
    consent=consents,
    spec=specs,
    summary=summaries,
    job=jobs,
    audit=audits,
    info=model_infos,
    file=model_files,
    upload=uploads,
    outcome=outcomes,
)
def test_every_pair_round_trips(
    task: Task,
    consent: Consent,
    spec: JobSpec,
    summary: ModelSummary,
    job: Job,
    audit: JobAudit,
    info: ModelInfo,
    file: ModelFile,
    upload: UploadResult,
    outcome: ExportOutcome,
) -> None:
    assert serde.task_from_proto(serde.task_to_proto(task)) == task
    assert serde.consent_from_proto(serde.consent_to_proto(consent)) == consent
    assert serde.spec_from_proto(serde.spec_to_proto(spec)) == spec
    assert serde.summary_from_proto(serde.summary_to_proto(summary)) == summary
    assert serde.job_from_proto(serde.job_to_proto(job)) == job
    assert serde.audit_from_proto(serde.audit_to_proto(audit)) == audit
    assert serde.model_info_from_proto(serde.model_info_to_proto(info)) == info
    assert serde.model_file_from_proto(serde.model_file_to_proto(file)) == file
    assert serde.upload_result_from_proto(serde.upload_result_to_proto(upload)) == upload
    assert serde.export_outcome_from_proto(serde.export_outcome_to_proto(outcome)) == outcome
    assert serde.progress_from_proto(
        serde.progress_to_proto(job.job_id, job.state, job.progress)
    ) == (job.job_id, job.state, job.progress)


@settings(max_examples=50)
@given(
    dtype=st.sampled_from(list(DTYPES)),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    batch_id=ids,
    task_id=ids,
)
def test_tensors_and_batches_round_trip_bit_exactly(
    dtype: str, shape: list[int], seed: int, batch_id: str, task_id: str
) -> None:
    raw = np.random.default_rng(seed).bytes(int(np.prod(shape)) * DTYPES[dtype].itemsize)
    array = np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)
    back = serde.tensor_from_proto(serde.tensor_to_proto(array), "x")
    assert (
        back.dtype == array.dtype
        and back.shape == array.shape
        and back.tobytes() == array.tobytes()
    )
    labels = np.arange(shape[0], dtype=np.int64)
    batch = serde.batch_from_proto(
        serde.batch_to_proto(ExampleBatch(batch_id, task_id, array, labels))
    )
    assert (batch.batch_id, batch.task_id) == (batch_id, task_id)
    assert batch.features.tobytes() == raw and batch.labels.tolist() == labels.tolist()


def test_tensor_bytes_are_little_endian() -> None:
    message = serde.tensor_to_proto(np.array([[1.0]], dtype=">f4"))
    assert message.data == np.array([1.0], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        (pb.Tensor(dtype=pb.DTYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4), "features.dtype"),
        (pb.Tensor(dtype=99, shape=[1], data=b"\0" * 4), "features.dtype"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[], data=b""), "features.shape"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, -1], data=b""), "features.shape"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[1] * 9, data=b"\0" * 4), "features.shape"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2, 3], data=b"\0" * 23), "features.data"),
        (pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[2**40, 2**40], data=b""), "features.data"),
    ],
)
def test_malformed_tensors_name_their_field(tensor: pb.Tensor, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        serde.tensor_from_proto(tensor, "features")
    assert info.value.field == field and str(info.value).startswith(field)


def test_a_batch_without_features_and_a_job_with_an_unknown_mode_are_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"^features: required"):
        serde.batch_from_proto(pb.ExampleBatch(batch_id="b", task_id="t"))
    with pytest.raises(InvalidArgument, match=r"^spec\.mode"):
        serde.spec_from_proto(pb.JobSpec(task_id="t", mode=42))
    assert serde.spec_from_proto(pb.JobSpec(task_id="t")).mode == "joint"  # unspecified = joint

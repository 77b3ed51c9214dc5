"""Models through a real server: export (fake engine), manifest, chunked and resumable download, bad ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    TASK_ID,
    Device,
    RunningServer,
    SeededServer,
    example_batch,
    expect_error,
)

Exported = tuple[SeededServer, pb.ExportResult]


def download(
    device: Device, model_id: str, path: str, offset: int = 0, chunk_bytes: int = 0
) -> tuple[bytes, str]:
    """A file's bytes from `offset` and the sha256 the server announced."""
    request = pb.DownloadModelRequest(
        model_id=model_id, path=path, offset=offset, chunk_bytes=chunk_bytes
    )
    chunks = list(device.stub.DownloadModel(request, metadata=device.md))
    starts = [offset + sum(len(c.data) for c in chunks[:i]) for i in range(len(chunks))]
    assert [c.offset for c in chunks] == starts and {c.path for c in chunks} == {path}
    assert len({c.sha256 for c in chunks}) == 1 and len({c.total_bytes for c in chunks}) == 1
    return b"".join(c.data for c in chunks), chunks[0].sha256


def export(s: RunningServer, job_ids: list[str], formats: list[str]) -> list[pb.ExportResult]:
    request = pb.ExportModelsRequest(job_ids=job_ids, formats=formats)
    return list(s.operator.ExportModels(request, metadata=s.op_md).results)


@pytest.fixture
def exported(seeded_server: SeededServer) -> Exported:
    """A finished job exported to ONNX by the fake engine's exporter."""
    s, device = seeded_server.server, seeded_server.device
    device.stub.UploadExamples(iter([example_batch("b1")]), metadata=device.md)
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK_ID, steps=2)), metadata=s.op_md
    )
    list(s.operator.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=s.op_md, timeout=60))
    return seeded_server, export(s, [job.job_id], ["onnx"])[0]


def test_an_exported_model_is_listed_described_and_downloaded_intact(exported: Exported) -> None:
    seeded, result = exported
    s, device = seeded.server, seeded.device
    assert result.ok and result.error == "" and list(result.model.formats) == ["onnx"]
    model_id = result.model.model_id
    listed = device.stub.ListModels(
        pb.ListModelsRequest(task_id=TASK_ID), metadata=device.md
    ).models
    assert [m.model_id for m in listed] == [model_id] and listed[0].job_id == result.job_id
    manifest = device.stub.GetModelManifest(
        pb.GetModelManifestRequest(task_id=TASK_ID), metadata=device.md
    )
    assert manifest.model.model_id == model_id and '"schema_version": 1' in manifest.manifest_json
    assert {f.path for f in manifest.files} == {"head.npz", "manifest.json", "model.onnx"}
    for file in manifest.files:
        data, sha = download(device, model_id, file.path, chunk_bytes=64 * 1024)
        assert len(data) == file.bytes and hashlib.sha256(data).hexdigest() == sha == file.sha256
    job = s.operator.GetJob(pb.GetJobRequest(job_id=result.job_id), metadata=s.op_md)
    assert job.result.model_id == model_id


def test_a_broken_download_resumes_from_its_offset(exported: Exported) -> None:
    seeded, result = exported
    device, model_id = seeded.device, result.model.model_id
    whole, _ = download(device, model_id, "model.onnx")
    assert len(whole) == 300_000
    small, _ = download(device, model_id, "model.onnx", chunk_bytes=1000)
    tail, _ = download(device, model_id, "model.onnx", offset=123_456)
    assert small == whole and whole[:123_456] + tail == whole
    assert download(device, model_id, "model.onnx", offset=300_000)[0] == b""


def test_bad_requests_name_their_field(exported: Exported) -> None:
    seeded, result = exported
    s, device, model_id = seeded.server, seeded.device, result.model.model_id
    not_found, invalid = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    downloads = [
        ({"model_id": "model-nope", "path": "model.onnx"}, not_found, "model_id"),
        ({"model_id": "", "path": "model.onnx"}, not_found, "model_id"),
        ({"path": "nope.bin"}, not_found, "path"),
        ({"path": "../../server.lock"}, not_found, "path"),
        ({"path": "/etc/passwd"}, not_found, "path"),
        ({"path": "model.onnx", "offset": 300_001}, invalid, "offset"),
        ({"path": "model.onnx", "offset": -1}, invalid, "offset"),
        ({"path": "model.onnx", "chunk_bytes": -1}, invalid, "chunk_bytes"),
    ]
    for fields, code, field in downloads:
        request = pb.DownloadModelRequest(**{"model_id": model_id, **fields})
        assert expect_error(
            code, device.stub.DownloadModel, request, metadata=device.md
        ).startswith(field)
    manifests = [
        (pb.GetModelManifestRequest(), invalid, "model_id"),
        (pb.GetModelManifestRequest(model_id="model-nope"), not_found, "model_id"),
        (pb.GetModelManifestRequest(task_id="nope"), not_found, "task_id"),
    ]
    for request, code, field in manifests:
        assert expect_error(
            code, device.stub.GetModelManifest, request, metadata=device.md
        ).startswith(field)
    exports = [
        (pb.ExportModelsRequest(), invalid, "job_ids"),
        (pb.ExportModelsRequest(job_ids=["job-nope"]), not_found, "job_id"),
        (
            pb.ExportModelsRequest(job_ids=[result.job_id], formats=["onnx", "coreml"]),
            invalid,
            "formats[1]",
        ),
    ]
    for request, code, field in exports:
        assert expect_error(code, s.operator.ExportModels, request, metadata=s.op_md).startswith(
            field
        )


def test_only_finished_jobs_export_and_each_export_is_a_new_model(exported: Exported) -> None:
    seeded, first = exported
    s, device = seeded.server, seeded.device
    spec = pb.JobSpec(task_id=TASK_ID, steps=900)
    job = s.operator.StartJob(pb.StartJobRequest(spec=spec), metadata=s.op_md)
    s.operator.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=s.op_md)
    again, refused = export(s, [first.job_id, job.job_id], ["onnx", "tflite"])
    assert again.ok and again.model.model_id != first.model.model_id
    assert set(again.model.formats) == {"onnx", "tflite"}
    assert not refused.ok and "not succeeded" in refused.error
    latest = device.stub.GetModelManifest(
        pb.GetModelManifestRequest(task_id=TASK_ID), metadata=device.md
    )
    assert latest.model.model_id == again.model.model_id


def test_a_bundle_without_manifest_is_refused(
    running_server: RunningServer, tmp_path: Path
) -> None:
    running_server.create_task()
    (tmp_path / "b").mkdir()
    with pytest.raises(Exception, match=r"manifest\.json"):
        running_server.handle.app.models.import_bundle(TASK_ID, "", tmp_path / "b")
    assert running_server.handle.app.store.list_models() == []

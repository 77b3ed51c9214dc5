"""The whole flow on the real search engine and exporter, through a real server.

register -> consent -> upload -> search (tiny budget) -> watch to completion -> export -> download and
check every hash. The fast fake-engine tests cover the server's own rules; these check the contracts
with `server.search` and `export` (docs/architecture.md §1-5).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server import engine
from tests.fixtures.search_fixtures import make_toy_signals
from tests.fixtures.server_fixtures import (
    APP_ID,
    PURPOSE,
    Device,
    RunningServer,
    example_batch,
    expect_error,
)

TASK = "toy-signals"
LABELS = ("c0", "c1", "c2")
BATCH = 40


def real_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A server whose jobs run the real search engine on the CPU."""
    return server_factory(engine="autohas_edge.server.engine", search_device="cpu")


def toy_examples(n: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The toy 1-D signal problem with `channels` channels: the first carries the class bump, the
    others are shifted, rescaled copies of it (like the axes of an accelerometer)."""
    toy = make_toy_signals(n=n, length=16, classes=3)
    x = np.concatenate([np.roll(toy["x"], c, axis=2) * (1 + c) for c in range(channels)], axis=1)
    return x.astype(np.float32), toy["y"]


def signal_batches(
    user: str, index: int, per_user: int, channels: int = 1
) -> list[pb.ExampleBatch]:
    """`per_user` examples of the toy 1-D signal problem, in batches of 40."""
    x, y = toy_examples(2 * per_user, channels)
    mine = slice(index * per_user, (index + 1) * per_user)
    x, y = x[mine], y[mine]
    return [
        pb.ExampleBatch(
            batch_id=f"{user}-{k}",
            task_id=TASK,
            labels=y[k : k + BATCH].tolist(),
            features=pb.Tensor(
                dtype=pb.DTYPE_FLOAT32,
                shape=x[k : k + BATCH].shape,
                data=x[k : k + BATCH].astype("<f4").tobytes(),
            ),
        )
        for k in range(0, per_user, BATCH)
    ]


def populate(s: RunningServer, per_user: int = 120, channels: int = 1) -> dict[str, Device]:
    """A 1-D signal task; alice and bob consent and upload `per_user` examples each; carol never consents."""
    s.create_task(TASK, input_shape=(channels, 16), num_classes=3, label_names=LABELS)
    devices = {user: s.register(APP_ID, user) for user in ("alice", "bob", "carol")}
    for index, user in enumerate(("alice", "bob")):
        device = devices[user]
        device.stub.GrantConsent(
            pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v3"), metadata=device.md
        )
        reply = device.stub.UploadExamples(
            iter(signal_batches(user, index, per_user, channels)), metadata=device.md
        )
        assert reply.examples_stored == per_user
    carol = devices["carol"]
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        carol.stub.UploadExamples,
        iter([example_batch("c-0", task_id=TASK, shape=(channels, 16))]),
        metadata=carol.md,
    )
    return devices


def run_job(s: RunningServer, **spec: object) -> tuple[pb.Job, list[pb.JobProgress]]:
    """Start a job on TASK and watch it to its end."""
    job = s.operator.StartJob(
        pb.StartJobRequest(spec=pb.JobSpec(task_id=TASK, **spec)), metadata=s.op_md
    )
    events = list(
        s.operator.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=s.op_md, timeout=600)
    )
    return s.operator.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md), events


def download(device: Device, model_id: str, path: str) -> tuple[bytes, str]:
    chunks = list(
        device.stub.DownloadModel(
            pb.DownloadModelRequest(model_id=model_id, path=path), metadata=device.md
        )
    )
    return b"".join(c.data for c in chunks), chunks[0].sha256


def check_bundle_download(device: Device, model_id: str) -> dict:
    """Download every file of a model; each must match the server's sha256 and the manifest's table."""
    reply = device.stub.GetModelManifest(
        pb.GetModelManifestRequest(model_id=model_id), metadata=device.md
    )
    manifest = json.loads(reply.manifest_json)
    listed = {f.path: f for f in reply.files}
    unlisted = {"manifest.json", *({"signature.json"} & set(listed))}  # a signed bundle's signature
    assert set(listed) == {*manifest["files"], *unlisted}
    for path, file in listed.items():
        data, sha = download(device, model_id, path)
        assert hashlib.sha256(data).hexdigest() == sha == file.sha256 and len(data) == file.bytes
        if path not in unlisted:
            assert manifest["files"][path] == {"sha256": sha, "bytes": len(data)}
    return manifest


def test_the_adapter_matches_the_engines_config() -> None:
    from autohas_edge.server.search import SearchConfig

    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    assert set(engine._SPEC_TO_CONFIG.values()) <= fields
    config = engine.search_config(
        {"task_id": "t", "mode": "nas", "steps": 7, "seed": 0, "max_params": 0},
        "/data/x.npz",
        "cpu",
    )
    assert (config.dataset, config.mode, config.steps, config.seed) == ("/data/x.npz", "nas", 7, 0)
    assert config.max_params == SearchConfig().max_params  # 0 = the engine's default
    budgets = engine.search_config(
        {"task_id": "t", "max_flops": 40_000, "max_latency_ms": 0.5, "within_points": 2.0},
        "/data/x.npz",
        "cpu",
    )
    assert (budgets.max_flops, budgets.max_latency_ms, budgets.within_points) == (40_000, 0.5, 2.0)
    with pytest.raises(ValueError, match=r"spec\.test_fraction"):
        engine.search_config({"test_fraction": 0.3}, "/data/x.npz", "cpu")


def test_the_server_picks_a_checkpoint_interval_that_fits_the_job() -> None:
    """The engine's default (every 100 steps) would leave a short job without a checkpoint to resume."""
    every = {
        steps: engine.search_config({"steps": steps}, "/d.npz", "cpu").checkpoint_every
        for steps in (1, 8, 40, 600, 100_000)
    }
    assert every == {1: 1, 8: 1, 40: 2, 600: 30, 100_000: 100}
    default = engine.search_config({}, "/d.npz", "cpu")  # the engine's default step budget
    assert default.checkpoint_every == engine.checkpoint_every(default.steps) < default.steps
    first, again = (
        engine.search_config({"steps": 77, "seed": 3}, "/d.npz", "cpu") for _ in range(2)
    )
    assert (
        first == again
    )  # a resumed job rebuilds the same config, which the engine requires to resume


def test_a_server_with_two_search_workers_runs_jobs_under_torchrun(
    server_factory: Callable[..., RunningServer],
) -> None:
    s = server_factory(engine="autohas_edge.server.engine", search_device="cpu", search_workers=2)
    populate(s, per_user=80)
    job, events = run_job(s, strategy="reinforce", steps=4, retrain_steps=2, seed=1)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert any(
        e.stage == "search" for e in events
    )  # rank 0's progress reached the watcher (coalesced)
    result = json.loads((s.handle.app.jobs.run_dir(job.job_id) / "result.json").read_text())
    assert result["search_steps"] == 4
    assert (
        result["workers"]["world_size"] == 2 and result["workers"]["max_encoding_difference"] == 0.0
    )
    assert result["strategy"] == "reinforce" and job.result.params == result["params"]


def test_a_real_search_runs_as_a_server_job(server_factory: Callable[..., RunningServer]) -> None:
    s = real_server(server_factory)
    populate(s, per_user=80)
    job, events = run_job(s, mode=pb.SEARCH_MODE_NAS, steps=2, retrain_steps=2, seed=1)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    stages = [e.stage for e in events]
    assert stages[0] in ("queued", "load") and stages[-1] == "done" and "search" in stages
    assert (
        job.result.params > 0 and job.result.architecture and 0.0 <= job.result.test_accuracy <= 1.0
    )
    result = json.loads((s.handle.app.jobs.run_dir(job.job_id) / "result.json").read_text())
    assert result["dataset"]["label_names"] == list(LABELS) and result["config"]["mode"] == "nas"


@pytest.mark.slow
def test_the_whole_flow_on_the_real_engine(server_factory: Callable[..., RunningServer]) -> None:
    s = real_server(server_factory)
    devices = populate(s)
    job, events = run_job(s, mode=pb.SEARCH_MODE_JOINT, steps=4, retrain_steps=6, seed=0)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    stages = [e.stage for e in events]
    assert stages.index("search") < stages.index("retrain") < stages.index("done")
    search = [e for e in events if e.stage == "search"]
    assert search and all(e.total_steps == 4 for e in search)
    for encoding in search[-1].encodings:
        assert len(encoding.candidates) == len(encoding.probabilities)
        assert sum(encoding.probabilities) == pytest.approx(1.0, abs=1e-4)
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    assert {(u.user_id, u.examples, u.consent_text_version) for u in audit.users} == {
        ("alice", 120, "v3"),
        ("bob", 120, "v3"),
    }
    reply = s.operator.ExportModels(
        pb.ExportModelsRequest(job_ids=[job.job_id], formats=["onnx"]), metadata=s.op_md
    )
    (result,) = reply.results
    assert result.ok, result.error
    alice = devices["alice"]
    models = alice.stub.ListModels(pb.ListModelsRequest(task_id=TASK), metadata=alice.md).models
    assert [m.model_id for m in models] == [result.model.model_id] and "onnx" in models[0].formats
    manifest = check_bundle_download(alice, result.model.model_id)
    assert manifest["fine_tuning"]["num_classes"] == 3 and manifest["label_names"] == list(LABELS)


@pytest.mark.slow
def test_a_real_bundle_is_served_byte_for_byte(
    running_server: RunningServer, tiny_bundle: Path
) -> None:
    s = running_server
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    s.create_task(
        TASK,
        input_shape=tuple(manifest["input"]["shape"][1:]),
        num_classes=manifest["fine_tuning"]["num_classes"],
    )
    info = s.handle.app.models.import_bundle(TASK, "", tiny_bundle)
    assert set(info.formats) == {"onnx", "tflite", "onnx-int8", "tflite-int8"}
    check_bundle_download(s.register(), info.model_id)


@pytest.mark.slow
def test_a_three_channel_sensor_task_runs_through_the_server_export_and_the_sdk(
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
    signing_key_file: Path,
    trusted_key: str,
) -> None:
    """A 3-axis signal [3, 16], as the CLI takes it: search, export (ONNX and TFLite, signed by
    the server), download, install and predict with the device SDK on both runtimes."""
    from autohas_edge.device_sdk.hub import Hub

    s = server_factory(
        engine="autohas_edge.server.engine", search_device="cpu", signing_key=signing_key_file
    )
    devices = populate(s, channels=3)
    job, _ = run_job(s, mode=pb.SEARCH_MODE_JOINT, steps=4, retrain_steps=6, seed=0)
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    reply = s.operator.ExportModels(
        pb.ExportModelsRequest(job_ids=[job.job_id], formats=["onnx", "tflite"]), metadata=s.op_md
    )
    (result,) = reply.results
    assert result.ok, result.error
    alice = devices["alice"]
    manifest = check_bundle_download(alice, result.model.model_id)
    assert manifest["input"]["shape"][1:] == [3, 16]
    bundle = tmp_path / "bundle"
    for path in [*manifest["files"], "manifest.json", "signature.json"]:
        (bundle / path).parent.mkdir(parents=True, exist_ok=True)
        (bundle / path).write_bytes(download(alice, result.model.model_id, path)[0])
    x, _ = toy_examples(60, 3)
    for fmt in ("onnx", "tflite"):
        hub = Hub(tmp_path / f"hub-{fmt}", format=fmt, trusted_keys=[trusted_key])
        hub.install(bundle, TASK)
        probs = hub.model(TASK, app_id=APP_ID).predict(x)
        assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two searches and two exports
def test_bring_your_own_three_axis_data_from_the_cli_to_a_fine_tune_on_the_device(
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """The README's path with a user's own 3-axis recordings, saved channels-last with labels 1..3:
    `autohas search`, `export`, `verify`; then a server task of the same shape, uploads through the
    SDK, a job and an export through the operator CLI, a download, and a fine-tune on the device."""
    from autohas_edge.device_sdk import Hub, ServerClient
    from autohas_edge.export.signing import public_key_path
    from autohas_edge.server.cli import main

    x, y = toy_examples(240, 3)  # [n, 3, 16], classes 0..2
    own = tmp_path / "accel.npz"
    np.savez(own, x=np.moveaxis(x, 1, 2), y=y + 1, channels=np.array("last"))  # [n, 16, 3]
    run, dist = tmp_path / "runs" / "accel", tmp_path / "dist"
    tiny = ["--steps", "4", "--retrain-steps", "6", "--batch-size", "16", "--quiet"]
    assert (
        main(["search", "--dataset", str(own), "--layout", "signal", "--out", str(run), *tiny]) == 0
    )
    printed = capsys.readouterr()
    assert "signal [3x16]" in printed.out and "remapped to classes 0..2" in printed.err
    assert json.loads((run / "result.json").read_text())["dataset"]["label_names"] == [
        "1",
        "2",
        "3",
    ]
    key = tmp_path / "keys" / "bundles.pem"  # the release engineer's signing key
    key.parent.mkdir()
    assert main(["keygen", str(key)]) == 0
    export = ["export", str(run), "--formats", "onnx,tflite", "--out", str(dist)]
    assert main([*export, "--signing-key", str(key)]) == 0
    assert main(["verify", str(dist / "accel")]) == 0
    capsys.readouterr()

    s = server_factory(engine="autohas_edge.server.engine", search_device="cpu", signing_key=key)
    monkeypatch.setenv("AUTOHAS_OPERATOR_TOKEN", s.operator_token)
    op = ["--address", s.address]
    task = ["create", TASK, "--app-id", APP_ID, "--purpose", PURPOSE, "--input-shape", "3,16"]
    assert main(["tasks", *op, *task, "--num-classes", "3", "--layout", "signal"]) == 0
    assert "created task toy-signals: input [3, 16]" in capsys.readouterr().out
    for index, user in enumerate(("alice", "bob")):
        with ServerClient(s.address, tmp_path / user, app_id=APP_ID, user_id=user) as client:
            client.register()
            client.grant_consent(PURPOSE, text_version="v3")
            client.upload(
                TASK, x[index * 120 : (index + 1) * 120], y[index * 120 : (index + 1) * 120]
            )
    assert (
        main(["jobs", *op, "start", TASK, "--steps", "4", "--retrain-steps", "6", "--watch"]) == 0
    )
    job_id = capsys.readouterr().out.split()[2]
    assert main(["models", *op, "export", job_id, "--formats", "onnx,tflite"]) == 0
    bundle = tmp_path / "downloaded"
    assert main(["models", *op, "download", "--task-id", TASK, "--out", str(bundle)]) == 0
    assert main(["verify", str(bundle)]) == 0

    hub = Hub(tmp_path / "hub", trusted_keys=[public_key_path(key).read_text()])
    hub.install(bundle, TASK)
    model = hub.model(TASK, app_id=APP_ID)
    assert model.predict(x[:5]).shape == (5, 3)
    tuned = model.fine_tune(x[:80], y[:80])
    assert tuned.heldout_accuracy_after >= 0 and tuned.accepted in (True, False)

"""The main job end to end: loopback server, simulated devices, consent, search, export, fine-tuning."""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from autohas_edge.export.signing import generate_key
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.app import make_server
from autohas_edge.server.config import ServerConfig
from autohas_edge.server.demo.devices import (
    APPS,
    PURPOSE,
    TASK_ID,
    AppBackend,
    Device,
    consent_and_upload,
    make_device,
    personalise,
    revoke,
)
from autohas_edge.server.demo.population import (
    CHANNELS,
    LABEL_NAMES,
    NUM_CLASSES,
    SIGNAL_LENGTH,
    make_population,
)
from autohas_edge.server.demo.report import EncodingHistory
from autohas_edge.server.enrollment import mint_ticket
from autohas_edge.server.jobs.files import write_json_atomic
from autohas_edge.server.operator_client import OperatorClient

FORMATS = ("onnx", "tflite", "onnx-int8", "tflite-int8")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: how many users, the search budget, where it writes."""

    data_dir: Path
    report_dir: Path
    users: int = 20
    examples_per_user: int = 240
    steps: int = 150
    retrain_steps: int = 1000
    max_params: int = 50_000
    seed: int = 0
    port: int = 0  # 0 = any free loopback port

    def __post_init__(self) -> None:
        if self.users < 4:
            raise ValueError(
                f"users must be >= 4 (some consent, some decline, one revokes): {self.users}"
            )
        if self.steps < 1 or self.retrain_steps < 1:
            raise ValueError("steps and retrain_steps must be positive")


@dataclass
class DemoOutcome:
    """Everything the summary reports."""

    devices: list[Device]
    job: pb.Job
    audit: pb.JobAudit
    manifest: dict[str, Any]
    history: EncodingHistory
    exported: list[pb.ExportResult]
    revoked_deleted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def decision(index: int, users: int) -> str:
    """Who does what: every fifth user declines, user 1 consents and later revokes, the rest consent."""
    if index % 5 == 4:
        return "decline"
    return "revoke" if index == 1 else "consent"


def run_demo(config: DemoConfig) -> DemoOutcome:
    """Run the whole flow against a fresh loopback server; the server is stopped at the end."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    keys = {
        app: secrets.token_urlsafe(32) for app in APPS
    }  # each app's backend shares one with the server
    keys_file = config.data_dir / "enrollment-keys.json"
    write_json_atomic(keys_file, keys)  # private: the server refuses readable keys
    # the server signs every bundle with this key; every device's hub pins its public half
    signing_key = config.data_dir / "bundle-signing.pem"
    public_key, _ = generate_key(signing_key)
    server_config = ServerConfig(
        data_dir=config.data_dir / "server",
        operator_token=token,
        port=config.port,
        enrollment_keys=keys_file,
        signing_key=signing_key,
        reflection=True,  # the demo's server is on loopback: let grpcurl look around
    )
    handle = make_server(server_config)  # OSError when the port is taken
    handle.start()
    try:
        with OperatorClient(handle.address, token) as operator:
            backend = lambda app, user: mint_ticket(keys[app], app, user)  # noqa: E731
            return _flow(config, handle.address, operator, backend, public_key.read_text())
    finally:
        handle.stop(grace=2.0)


def _flow(
    config: DemoConfig,
    address: str,
    operator: OperatorClient,
    app_backend: AppBackend,
    trusted_key: str,
) -> DemoOutcome:
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    operator.create_task(
        pb.Task(
            task_id=TASK_ID,
            app_ids=["com.example.gestures", "com.example.fitness"],
            purpose=PURPOSE,
            input_shape=[CHANNELS, SIGNAL_LENGTH],
            input_dtype=pb.DTYPE_FLOAT32,
            num_classes=NUM_CLASSES,
            label_names=list(LABEL_NAMES),
            layout="signal",
        )
    )
    users = make_population(config.users, config.examples_per_user, seed=config.seed)
    devices = [
        make_device(
            u,
            i,
            config.data_dir / "devices",
            address,
            decision(i, config.users) != "decline",
            app_backend,
            trusted_key,
        )
        for i, u in enumerate(users)
    ]
    for device in tqdm(devices, desc="devices: consent + upload", unit="device", file=sys.stderr):
        if device.outcome.consented:
            consent_and_upload(device)
    revoker = next(d for i, d in enumerate(devices) if decision(i, config.users) == "revoke")
    deleted = revoke(revoker)
    seconds["upload"] = time.perf_counter() - t

    t = time.perf_counter()
    job, history = _search(config, operator)
    seconds["search job"] = time.perf_counter() - t
    audit = operator.audit(job.job_id)
    used = {u.user_id: u.examples for u in audit.users}
    for device in devices:
        device.outcome.used_by_job = used.get(device.user.user_id, 0)

    t = time.perf_counter()
    exported = list(operator.export([job.job_id], FORMATS).results)
    failed = [r for r in exported if not r.ok]
    if failed:
        raise RuntimeError(f"export failed: {failed[0].error}")
    seconds["export"] = time.perf_counter() - t

    t = time.perf_counter()
    for device in tqdm(
        devices, desc="devices: download + fine-tune", unit="device", file=sys.stderr
    ):
        personalise(device)
        device.close()
    seconds["personalise"] = time.perf_counter() - t
    manifest = devices[0].hub.model(TASK_ID, app_id=devices[0].app_id).manifest.raw
    job = operator.job(job.job_id)
    return DemoOutcome(devices, job, audit, manifest, history, exported, deleted, seconds)


def _search(config: DemoConfig, operator: OperatorClient) -> tuple[pb.Job, EncodingHistory]:
    """Start the joint search and follow it with a progress bar until it ends."""
    job = operator.start_job(
        TASK_ID,
        mode="joint",
        steps=config.steps,
        retrain_steps=config.retrain_steps,
        max_params=config.max_params,
        seed=config.seed,
    )
    history = EncodingHistory()
    with tqdm(desc="search job", unit="step", file=sys.stderr) as bar:
        for event in operator.watch(job.job_id):
            bar.total = event.total_steps or bar.total
            bar.n = event.step
            loss = (
                event.val_loss if event.val_loss == event.val_loss else event.train_loss
            )  # NaN in warm-up
            bar.set_postfix_str(f"{event.stage} loss={loss:.3f}")
            bar.refresh()
            if event.stage == "search" and event.encodings:
                encodings = {
                    e.name: dict(zip(e.candidates, e.probabilities, strict=True))
                    for e in event.encodings
                }
                history.add(event.step, encodings, event.learning_rate)
    job = operator.job(job.job_id)
    if job.state != pb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(
            f"search job {job.job_id} ended {pb.JobState.Name(job.state)}: {job.error}"
        )
    return job, history

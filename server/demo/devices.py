"""Simulated devices: each is a phone with two apps, one model hub and the SDK's server client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autohas_edge.device_sdk import Hub, ServerClient
from autohas_edge.server.demo.population import SimulatedUser
from autohas_edge.server.demo.report import UserOutcome

TASK_ID = "gestures"
PURPOSE = "personalization"
APPS = ("com.example.gestures", "com.example.fitness")
#: (app_id, user_id) -> enrollment ticket: what each app's own backend hands its signed-in users
AppBackend = Callable[[str, str], str]


@dataclass
class Device:
    """One simulated phone: its user, the app that uploads, its hub and the local/evaluation split."""

    user: SimulatedUser
    app_id: str
    client: ServerClient
    hub: Hub
    runtime: str
    outcome: UserOutcome
    local: slice
    evaluation: slice

    def close(self) -> None:
        """Close the server connection."""
        self.client.close()


def make_device(
    user: SimulatedUser,
    index: int,
    root: Path,
    address: str,
    consents: bool,
    app_backend: AppBackend,
    trusted_key: str,
) -> Device:
    """Set up a device for `user`: state on disk under `root/<user_id>`, registered with the server
    with an enrollment ticket from its app's backend; its hub installs only bundles signed by the key
    whose public half is `trusted_key` (PEM)."""
    app = APPS[index % len(APPS)]
    home = root / user.user_id
    client = ServerClient(
        address, home / "state", app_id=app, user_id=user.user_id, device_name=f"phone-{index:02d}"
    )
    client.register(enrollment_ticket=app_backend(app, user.user_id))
    runtime = "onnx" if index % 2 == 0 else "tflite"
    n_local = int(len(user.y) * 2 / 3)  # the rest is the user's own evaluation data, never uploaded
    outcome = UserOutcome(user.user_id, app, consented=consents)
    return Device(
        user,
        app,
        client,
        Hub(home / "hub", format=runtime, threads=1, trusted_keys=[trusted_key]),
        runtime,
        outcome,
        slice(0, n_local),
        slice(n_local, None),
    )


def consent_and_upload(device: Device) -> None:
    """Grant consent and upload the device's local examples in batches of 40."""
    device.client.grant_consent(PURPOSE, text_version="2026-11")
    x, y = device.user.x[device.local], device.user.y[device.local]
    for start in range(0, len(y), 40):
        device.client.upload(TASK_ID, x[start : start + 40], y[start : start + 40])
    device.outcome.uploaded = len(y)


def revoke(device: Device) -> int:
    """Revoke consent; the server deletes the user's examples at once. Returns how many it deleted."""
    deleted = device.client.revoke_consent(PURPOSE)
    device.outcome.revoked = True
    return deleted


def personalise(device: Device) -> None:
    """Fetch and verify the model, measure it on the user's evaluation data, fine-tune, measure again."""
    device.client.fetch_model(TASK_ID, device.hub)
    model = device.hub.model(TASK_ID, app_id=device.app_id)
    other = device.hub.model(TASK_ID, app_id=next(a for a in APPS if a != device.app_id))
    if other.model_id != model.model_id:
        raise RuntimeError(f"{device.user.user_id}: the two apps do not share one model")
    x_eval, y_eval = device.user.x[device.evaluation], device.user.y[device.evaluation]
    device.outcome.accuracy_before = _accuracy(model.predict(x_eval), y_eval)
    # on examples collected after the model shipped: the global model trained on the uploaded ones
    result = model.fine_tune(device.user.x_fresh, device.user.y_fresh)
    device.outcome.accuracy_after = _accuracy(model.predict(x_eval), y_eval)
    device.outcome.fine_tune_seconds = result.seconds
    device.outcome.kept_previous = not result.accepted


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == labels).mean())

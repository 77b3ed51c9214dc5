"""Fixtures for the device SDK tests: hubs, bundle copies, simulated users (real bundles, no mocks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.device_sdk import Hub
from autohas_edge.server.demo.population import User, global_test_split, make_user
from tests.device_sdk.helpers import TASK


@pytest.fixture(scope="session")
def bundle_dir(tiny_bundle: Path) -> Path:
    """The exported bundle every SDK test runs on (read-only: copy it before changing it)."""
    return Path(tiny_bundle)


@pytest.fixture(scope="session")
def manifest_json(bundle_dir: Path) -> dict:
    """The bundle's manifest as JSON."""
    return json.loads((bundle_dir / "manifest.json").read_text())


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the bundle (for tampering)."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle-copy"))


@pytest.fixture
def hub(tmp_path: Path, bundle_dir: Path, trusted_key: str) -> Hub:
    """A hub that trusts the bundle's signer, with the bundle installed as task `TASK`."""
    hub = Hub(tmp_path / "hub", trusted_keys=[trusted_key])
    hub.install(bundle_dir, TASK)
    return hub


@pytest.fixture(scope="session")
def reference(bundle_dir: Path) -> dict[str, np.ndarray]:
    """The bundle's reference inputs and torch outputs."""
    with np.load(bundle_dir / "reference.npz") as data:
        return {k: data[k] for k in ("x", "logits", "features")}


@pytest.fixture(scope="session")
def global_data(manifest_json: dict) -> tuple[np.ndarray, np.ndarray]:
    """Test-split examples of the dataset the bundle was trained on."""
    return global_test_split(manifest_json["dataset"]["name"])


@pytest.fixture(scope="session")
def skewed_user(global_data: tuple[np.ndarray, np.ndarray]) -> User:
    """A strongly shifted user (two favourite classes, reversed signals): any sound head training helps."""
    x, y = global_data
    return make_user(x, y, 3, "reverse", favourite_classes=2, skew=0.9)

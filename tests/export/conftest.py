"""Fixtures for the export tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A writable copy of the shared bundle, for tampering."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / tiny_bundle.name))

"""A small, real file system for full-disk tests: a tmpfs of a few MiB that a test fills and frees.

Mounting needs root (CI containers and this project's dev machines run tests as root); elsewhere the
tests that need it are skipped with the reason, since a mocked ENOSPC would test nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

FILLER = ".filler"


@dataclass
class SmallDisk:
    """A mounted tmpfs: `fill()` takes every free byte, `free()` gives them back."""

    root: Path

    def fill(self) -> None:
        """Write a filler file until the file system refuses (ENOSPC)."""
        block = b"\0" * 4096
        with open(self.root / FILLER, "ab", buffering=0) as f:
            try:
                while f.write(block):
                    pass
            except OSError:
                pass

    def free(self) -> None:
        """Delete the filler file."""
        (self.root / FILLER).unlink(missing_ok=True)


def _mount(root: Path, size_mib: int) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(root)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs under `tmp_path` (unmounted at teardown)."""
    root = tmp_path / "disk"
    root.mkdir()
    if not _mount(root, 16):
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)

"""Atomic, durable writes: old or new content, never a mix, no temp file left, private by default."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.common.fs import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_npz,
    atomic_write_text,
    file_stamp,
    read_json,
    sha256_file,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bytes_text_json_and_npz_land_whole_and_private(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "new" / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    atomic_write_npz(tmp_path / "d.npz", {"mode": np.arange(3), "path": np.ones(2)})
    assert (tmp_path / "new" / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text() == "héllo"
    text = (tmp_path / "c.json").read_text()
    assert text == json.dumps({"a": [1, 2], "b": 1}, indent=2) + "\n"
    with np.load(tmp_path / "d.npz") as data:
        assert data["mode"].tolist() == [0, 1, 2] and data["path"].tolist() == [1.0, 1.0]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4 and all(_mode(p) == 0o600 for p in files)  # no temp file left


def test_a_mode_can_be_asked_for(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "result.json", "{}", mode=0o644)
    assert _mode(tmp_path / "result.json") == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_json(path, {"version": 1})

    def broken(f: object) -> None:
        f.write(b'{"version": ')  # type: ignore[attr-defined]
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert read_json(path) == {"version": 1} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_read_json_default_sha256_and_stamp(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    assert read_json(path, {"none": True}) == {"none": True} and file_stamp(path) == (0, 0)
    atomic_write_json(path, [1])
    first = file_stamp(path)
    atomic_write_json(path, [1])
    assert first != (0, 0) and file_stamp(path) != first  # every replacement is a new inode
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()

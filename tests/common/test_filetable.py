"""The bundle file table: built once, checked once, read the same by export and the SDK."""

from __future__ import annotations

from pathlib import Path

import pytest

from autohas_edge.common.filetable import (
    MANIFEST,
    FileEntry,
    file_entry,
    file_problem,
    files_table,
    table_from_json,
    table_to_json,
)
from autohas_edge.common.fs import sha256_file


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "b.onnx").write_bytes(b"onnx")
    (tmp_path / "a.npz").write_bytes(b"npz!!")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.bin").write_bytes(b"")
    (tmp_path / MANIFEST).write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "a.npz")
    return tmp_path


def test_the_table_lists_regular_files_sorted_without_the_manifest(bundle: Path) -> None:
    table = files_table(bundle)
    assert list(table) == ["a.npz", "b.onnx", "sub/c.bin"]
    assert table["a.npz"] == (sha256_file(bundle / "a.npz"), 5) == file_entry(bundle / "a.npz")
    assert MANIFEST in files_table(bundle, with_manifest=True)
    assert table_from_json(table_to_json(table)) == table
    assert table_to_json(table)["b.onnx"] == {"sha256": sha256_file(bundle / "b.onnx"), "bytes": 4}


def test_problems_name_the_file(bundle: Path) -> None:
    entry = file_entry(bundle / "b.onnx")
    assert file_problem(bundle / "b.onnx", entry) == ""
    assert file_problem(bundle / "gone", entry, "gone") == "gone: missing (listed in manifest.json)"
    (bundle / "b.onnx").write_bytes(b"ONNX")
    assert file_problem(bundle / "b.onnx", entry, "b.onnx").startswith("b.onnx: sha256 mismatch")
    wrong_size = FileEntry(sha256_file(bundle / "b.onnx"), 7)
    assert file_problem(bundle / "b.onnx", wrong_size, "b.onnx") == (
        "b.onnx: size 4 bytes, manifest says 7"
    )


@pytest.mark.parametrize("raw", [{"x": {"sha256": "0"}}, {"x": {"bytes": "many", "sha256": "0"}}])
def test_a_malformed_table_raises(raw: dict) -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        table_from_json(raw)

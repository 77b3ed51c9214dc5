"""`verify_bundle` / `autohas verify`: hashes, reference outputs, tampering, and no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from autohas_edge.export import VerificationError, verify_bundle
from tests.export.helpers import manifest_of
from tests.fixtures.bundle_edits import rehash

ROOT = Path(__file__).resolve().parents[2]
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from autohas_edge.server.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _autohas_without_torch(*args: str) -> subprocess.CompletedProcess:
    """Run `autohas ARGS` in a fresh interpreter where `import torch` fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)  # fmt: skip


def test_fresh_bundle_verifies(tiny_bundle: Path) -> None:
    report = verify_bundle(tiny_bundle)
    assert report.passed, report.problems
    assert len(report.checks) == 8 and not any(c.skipped for c in report.checks)
    assert all(c.argmax_agreement == 1.0 for c in report.checks if "int8" not in c.format)


def test_flipped_byte_is_a_hash_mismatch_naming_the_file(bundle_copy: Path) -> None:
    path = bundle_copy / "model.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_bundle(bundle_copy)
    assert not report.passed
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{path}: sha256 mismatch")
    assert "model.tflite" not in {c.file for c in report.checks}  # a tampered file is never run
    with pytest.raises(VerificationError, match=r"model\.tflite: sha256 mismatch"):
        report.raise_if_failed()


def test_forged_weights_with_a_matching_hash_fail_the_reference_check(bundle_copy: Path) -> None:
    path = bundle_copy / "model.onnx"
    model = onnx.load(str(path))
    tensor = next(
        t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims
    )
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5 + 0.1, tensor.name))
    onnx.save(model, str(path))
    rehash(bundle_copy, "model.onnx")
    report = verify_bundle(bundle_copy)
    assert not report.passed
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{path}: max abs diff")


def test_forged_reference_fails_every_float_artifact(bundle_copy: Path) -> None:
    path = bundle_copy / "reference.npz"
    with np.load(path) as data:
        arrays = dict(data)
    arrays["logits"] = arrays["logits"] + 0.01
    np.savez(path, **arrays)
    problems = verify_bundle(bundle_copy).problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}: sha256 mismatch")
    rehash(bundle_copy, "reference.npz")
    failed = {c.file for c in verify_bundle(bundle_copy).checks if not c.passed}
    assert {"model.onnx", "model.tflite"} <= failed


def test_missing_and_unlisted_files_are_reported(bundle_copy: Path) -> None:
    (bundle_copy / "features.onnx").unlink()
    (bundle_copy / "extra.bin").write_bytes(b"x")
    problems = verify_bundle(bundle_copy).problems
    assert f"{bundle_copy / 'features.onnx'}: missing (listed in manifest.json)" in problems
    assert f"{bundle_copy / 'extra.bin'}: not listed in manifest.json" in problems


def test_verify_cli_needs_no_torch(tiny_bundle: Path) -> None:
    done = _autohas_without_torch("verify", str(tiny_bundle))
    assert done.returncode == 0, done.stderr
    assert "OK: 8 artifacts run, 0 problems" in done.stdout


def test_verify_cli_tampered_and_missing_bundles_fail_with_one_line_errors(
    bundle_copy: Path,
) -> None:
    path = bundle_copy / "head.npz"
    path.write_bytes(path.read_bytes() + b"\0")
    done = _autohas_without_torch("verify", str(bundle_copy), str(bundle_copy.parent / "nope"))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith(f"error: {path}: sha256 mismatch")
    assert errors[1] == f"error: {bundle_copy.parent / 'nope'}: bundle directory not found"


def test_file_names_escaping_the_bundle_are_refused(bundle_copy: Path) -> None:
    manifest = manifest_of(bundle_copy)
    manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_bundle(bundle_copy).problems
    assert problems == [
        f"{bundle_copy / 'manifest.json'}: '../../etc/passwd' is not a plain file name inside the bundle"
    ]


def test_without_a_tflite_interpreter_tflite_artifacts_are_skipped_not_failed(
    tiny_bundle: Path,
) -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['ai_edge_litert'] = None\n"
        "from autohas_edge.export import verify_bundle\n"
        "r = verify_bundle(sys.argv[1])\n"
        "print(r.passed, sorted((c.format, c.skipped) for c in r.checks))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    skipped = (
        "[('onnx', False), ('onnx', False), ('onnx-int8', False), ('onnx-int8', False), "
        "('tflite', True), "
    )
    assert done.stdout.startswith(f"True {skipped}")

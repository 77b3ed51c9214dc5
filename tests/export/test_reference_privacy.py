"""A bundle made from personal data can carry synthetic reference inputs instead of anyone's examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.export import export_model, verify_bundle
from tests.export.helpers import ToyNet, toy_data, toy_result


def test_synthetic_reference_holds_no_real_example_and_still_verifies(tmp_path: Path) -> None:
    x, y = toy_data()
    report = export_model(
        ToyNet(), toy_result(), tmp_path, "onnx", x, x, y, name="m", reference="synthetic"
    )
    ref = np.load(report.bundle / "reference.npz")["x"]
    real_rows = {row.tobytes() for row in x}
    assert not any(row.tobytes() in real_rows for row in ref)
    assert ref.shape[1:] == x.shape[1:]
    # shaped like the data: per-feature means close to the calibration set's
    assert np.abs(ref.mean(axis=0) - x.mean(axis=0)).max() < 1.0
    manifest = json.loads((report.bundle / "manifest.json").read_text())
    assert "no real example" in manifest["reference"]["source"]
    assert verify_bundle(report.bundle).passed


def test_test_reference_is_the_default_and_unknown_sources_are_refused(tmp_path: Path) -> None:
    x, y = toy_data()
    report = export_model(ToyNet(), toy_result(), tmp_path, "onnx", x, x, y, name="m")
    np.testing.assert_array_equal(np.load(report.bundle / "reference.npz")["x"], x[:32])
    with pytest.raises(ValueError, match="reference must be one of"):
        export_model(ToyNet(), toy_result(), tmp_path, "onnx", x, x, y, name="n", reference="users")

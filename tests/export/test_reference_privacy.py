"""A bundle made from personal data can carry synthetic reference inputs instead of anyone's examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_synthetic_reference_does_not_depend_on_the_data() -> None:
    """A constant feature (a user's device model, say) was copied into the references exactly."""
    from autohas_edge.export.bundle import reference_inputs

    x, _ = toy_data()
    profiled = x.copy()
    profiled[:, 0] = 42.0  # one user's constant feature
    model = ToyNet()
    plain = reference_inputs("synthetic", x, x, model)
    assert np.array_equal(plain, reference_inputs("synthetic", profiled, profiled, model))
    assert not np.isclose(plain[:, 0], 42.0).any()
    # a model with input normalisation: references follow it, and only it
    model.register_buffer("norm_mean", torch.full((1, x.shape[1]), 3.0))
    model.register_buffer("norm_std", torch.full((1, x.shape[1]), 0.5))
    shifted = reference_inputs("synthetic", x, x, model)
    assert abs(float(shifted.mean()) - 3.0) < 0.2 and abs(float(shifted.std()) - 0.5) < 0.1

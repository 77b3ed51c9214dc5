"""Verification is part of export: a wrong or too-lossy artifact fails the export loudly, leaving nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autohas_edge.export import ExportError, VerificationError, export_model
from tests.export.helpers import ToyNet, toy_data, toy_result


def _labels(model: torch.nn.Module, x) -> object:
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def test_artifact_that_differs_from_torch_fails_the_export(tmp_path: Path) -> None:
    model = ToyNet(noisy=True).eval()
    x, y = toy_data()
    with pytest.raises(VerificationError) as info:
        export_model(model, toy_result(), tmp_path, "onnx", x, x, y, name="noisy")
    assert str(info.value).startswith(f"{tmp_path / 'noisy' / 'model.onnx'}: max abs diff ")
    assert list(tmp_path.iterdir()) == []


def test_int8_model_losing_accuracy_fails_the_export(tmp_path: Path) -> None:
    model = ToyNet().eval()
    x, _ = toy_data(256)
    with (
        torch.no_grad()
    ):  # one huge, ignored channel sets the int8 activation scale: the rest rounds to zero
        model.body[0].weight[0] *= 1e4
        model.body[0].bias[0] = 1e4
        model.classifier.weight[:, 0] = 0
        model.classifier.bias -= model(torch.from_numpy(x)).mean(0)  # roughly balanced classes
    pattern = (
        r"model_int8\.onnx: int8 test accuracy .* points below float 100\.00% \(at most 1 allowed\)"
    )
    with pytest.raises(VerificationError, match=pattern):
        export_model(
            model, toy_result(), tmp_path, "onnx-int8", x, x, _labels(model, x), name="lossy"
        )
    assert list(tmp_path.iterdir()) == []


def test_int8_only_bundle_keeps_no_float_files(tmp_path: Path) -> None:
    model = ToyNet().eval()
    x, _ = toy_data()
    report = export_model(
        model, toy_result(), tmp_path, ["onnx-int8"], x, x, _labels(model, x), name="q"
    )
    assert report.files == [
        "features_int8.onnx",
        "head.npz",
        "manifest.json",
        "model_int8.onnx",
        "reference.npz",
        "train_step.onnx",  # the head's train-step graph is float in every bundle
    ]
    assert report.int8_test_accuracy.keys() == {"model_int8.onnx", "features_int8.onnx"}


class _NoFeatures(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


class _HeadMismatch(ToyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1.0


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_NoFeatures(), "model has no features(x) method"),
        (_HeadMismatch(), "model(x) != model.classifier(model.features(x))"),
    ],
)
def test_model_breaking_the_contract_is_refused(
    tmp_path: Path, model: torch.nn.Module, problem: str
) -> None:
    x, y = toy_data()
    with pytest.raises(ExportError) as info:
        export_model(
            model.eval(), toy_result(), tmp_path, "onnx", x, x, y, source="runs/x/model.pt"
        )
    assert str(info.value).startswith(f"runs/x/model.pt: {problem}")


def test_export_errors_cross_a_process_boundary_as_themselves() -> None:
    """An export worker's error reaches the server's process pool intact (an error that cannot be
    unpickled there breaks the pool, and the user reads "terminated abruptly" instead)."""
    import pickle

    from autohas_edge.export.errors import ExportError, VerificationError

    for cls in (ExportError, VerificationError):
        error = cls("/tmp/model_int8.onnx", "int8 test accuracy 58.6% is 1.6 points below")
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is cls and str(again) == str(error) and again.path == error.path

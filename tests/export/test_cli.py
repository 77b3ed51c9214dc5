"""`autohas export`: batch export, progress, summary, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from autohas_edge.export import ExportError, export_run, verify_bundle
from autohas_edge.server.cli import main


def _mismatched_checkpoint(tiny_run: Path, dest: Path) -> Path:
    """A copy of `tiny_run` whose model.pt has a classifier of the wrong shape."""
    run = Path(shutil.copytree(tiny_run, dest))
    saved = torch.load(run / "model.pt", weights_only=True)
    saved["state_dict"]["classifier.weight"] = torch.zeros(3, 5)
    torch.save(saved, run / "model.pt")
    return run


def test_batch_export_survives_broken_runs_and_reports_them(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing, broken = tmp_path / "missing", _mismatched_checkpoint(tiny_run, tmp_path / "broken")
    out = tmp_path / "dist"
    code = main(
        ["export", str(missing), str(tiny_run), str(broken), "--formats", "onnx", "--out", str(out)]
    )
    assert code == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert errors[0] == f"error: {missing}: run directory not found"
    assert errors[1].startswith(
        f"error: {broken / 'model.pt'}: checkpoint does not match its config: "
    )
    table = captured.out.splitlines()
    assert table[0].split()[:2] == ["run", "status"]
    assert [line.split()[1] for line in table[2:5]] == ["FAILED", "ok", "FAILED"]
    assert "1 exported, 2 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [
        tiny_run.name
    ]  # no partial bundles left behind
    assert verify_bundle(out / tiny_run.name).passed


def test_unknown_format_is_a_one_line_usage_error(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tiny_run), "--formats", "onnx,coreml"]) == 2
    err = capsys.readouterr().err.strip()
    choices = "onnx, tflite, onnx-int8, tflite-int8"
    assert err == f"autohas export: --formats: unknown format 'coreml' (choose from {choices})"


def _no_result(run: Path) -> Path:
    (run / "result.json").unlink()
    return run / "result.json"


def _bad_json(run: Path) -> Path:
    (run / "result.json").write_text("{not json")
    return run / "result.json"


def _no_checkpoint(run: Path) -> Path:
    (run / "model.pt").unlink()
    return run / "model.pt"


def _no_fine_tuning(run: Path) -> Path:
    result = json.loads((run / "result.json").read_text())
    del result["fine_tuning"]["optimizer"]
    (run / "result.json").write_text(json.dumps(result))
    return run / "result.json"


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_no_result, "missing (is this a finished search run?)"),
        (_bad_json, "not valid JSON"),
        (_no_checkpoint, "missing (is this a finished search run?)"),
        (_no_fine_tuning, "fine_tuning has no 'optimizer'"),
    ],
)
def test_bad_run_directories_give_one_line_errors_naming_the_file(
    tiny_run: Path, tmp_path: Path, spoil, problem: str
) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    path = spoil(run)
    with pytest.raises(ExportError) as info:
        export_run(run, tmp_path / "dist", "onnx")
    assert str(info.value).startswith(f"{path}: {problem}") and "\n" not in str(info.value)
    assert not (tmp_path / "dist" / "run").exists()


def test_corrupt_checkpoint_is_not_called_a_mismatch(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match=r"model\.pt: cannot read the checkpoint: "):
        export_run(run, tmp_path / "dist", "onnx")

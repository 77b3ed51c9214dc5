"""`autohas search`: a run writes the run directory; bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.server.cli import main


def test_search_command_writes_result(
    tmp_path: Path, toy_signal_npz: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [
        "search",
        "--dataset",
        str(toy_signal_npz),
        "--mode",
        "joint",
        "--seed",
        "0",
        "--out",
        str(out),
        "--steps",
        "3",
        "--retrain-steps",
        "3",
        "--batch-size",
        "16",
        "--encoding-batch-size",
        "16",
        "--quiet",
    ]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["steps"] == 3 and result["config"]["encoding_batch_size"] == 16
    assert (out / "search.png").is_file() and (out / "model.pt").is_file()
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "is its SGD-equivalent" in printed
    assert "data: signals, signal [1x12] (guessed from the shape), 3 classes -> conv1d" in printed
    assert "training race (10 trainings" in printed  # 3 retraining steps: a 3-step race

    # the same command again: the finished run is reported and left alone
    model_time = (out / "model.pt").stat().st_mtime_ns
    assert main(argv) == 0
    assert "left alone (--retrain retrains it)" in capsys.readouterr().out
    assert (out / "model.pt").stat().st_mtime_ns == model_time
    # --retrain with a new retraining length retrains (without searching again)
    assert main([*argv, "--retrain", "--retrain-steps", "4"]) == 0
    assert json.loads((out / "result.json").read_text())["retrain_steps"] == 4
    assert (out / "model.pt").stat().st_mtime_ns != model_time
    # a finished search re-derived for a compact model: the smallest size within 100 points
    capsys.readouterr()
    assert main([*argv, "--retrain", "--within-points", "100"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["params"] == min(s["params"] for s in result["compact"]["sizes"])
    assert f"kept {result['params']:,} parameters" in capsys.readouterr().out


@pytest.mark.parametrize(
    "problem",
    ["missing", "malformed", "bad-option", "text", "directory", "negative", "out-file", "workers"],
)
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, problem: str
) -> None:
    path = tmp_path / "data.npz"
    out = tmp_path / "run"
    if problem == "malformed":
        np.savez(path, x=np.zeros((20, 4), np.float32))  # no labels
    if problem in ("negative", "out-file"):
        np.savez(path, x=np.ones((100, 4)), y=np.arange(100) % 3 - (problem == "negative"))
    if problem == "text":
        path.write_text("1,2,3\n")
    if problem == "directory":
        path.mkdir()
    if problem == "out-file":
        out.write_text("")
    argv = ["search", "--dataset", str(path), "--out", str(out), "--quiet"]
    if problem == "bad-option":
        argv += ["--steps", "0"]
    if problem == "workers":  # checked before torchrun starts: no rank tracebacks
        argv += ["--workers", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("autohas search: error:")
    expected = {
        "text": "is not an .npz",
        "directory": "is a directory, not a file",
        "negative": "negative label -1",
        "out-file": "is a file, not a run directory",
    }
    assert expected.get(problem, "") in err and "pickle" not in err
    if problem not in ("bad-option", "out-file"):
        assert str(path) in err


def test_every_subcommand_shows_examples_and_defaults(capsys: pytest.CaptureFixture) -> None:
    for command in ("search", "export", "verify", "server", "demo", "tasks", "jobs", "models"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "examples" in text and f"\n  autohas {command} " in text, command
        assert "--engine" not in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "(default: 20)" in capsys.readouterr().out  # --users, whose help did not say it
    with pytest.raises(SystemExit):
        main(["jobs", "start", "--help"])  # an operator action: defaults shown there too
    assert "(default: joint)" in capsys.readouterr().out

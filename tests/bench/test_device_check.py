"""The GPU machine's check script, run here on the CPU (the same checks, CPU tolerances)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch

from bench import device_check


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_the_device_check_passes_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert device_check.main(["--device", "cpu", "--steps", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["check"] for r in lines] == [
        "search (differentiable)",
        "search (reinforce)",
        "sub-model == one-hot mixture",
    ]
    assert all(r["ok"] for r in lines) and lines[-1]["max_abs_diff"] <= 1e-4

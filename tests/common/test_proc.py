"""Process liveness: the one check behind the hub's staging clean-up and the workers' parent watch."""

from __future__ import annotations

import os
import subprocess
import sys

from autohas_edge.common.proc import is_alive, process_identity


def test_a_running_process_is_alive_and_keeps_its_identity() -> None:
    assert is_alive(os.getpid()) and process_identity(os.getpid()) is not None
    assert process_identity(os.getpid()) == process_identity(os.getpid())


def test_an_ended_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not is_alive(child.pid) and process_identity(child.pid) is None


def test_process_groups_are_never_one_process() -> None:
    assert not is_alive(0) and not is_alive(-1) and process_identity(0) is None

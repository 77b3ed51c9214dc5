"""The export worker process does not outlive the server process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autohas_edge.common.proc import is_alive

#: a server-side process: the model registry starts its export worker, reports both pids, waits
SCRIPT = """
import os, sys, time
from pathlib import Path
from autohas_edge.server.models import ModelRegistry
from autohas_edge.server.store import open_store
registry = ModelRegistry(open_store("sqlite", Path(sys.argv[1])), Path(sys.argv[1]) / "models",
                         "autohas_edge.server.engine", 1 << 20)
worker = registry._pool().submit(os.getpid).result(timeout=120)
print(os.getpid(), worker, flush=True)
time.sleep(600)
"""


def test_a_killed_servers_export_worker_exits_by_itself(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        server_pid, worker_pid = (int(v) for v in proc.stdout.readline().split())
        assert server_pid == proc.pid and is_alive(worker_pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while is_alive(worker_pid):
            assert time.monotonic() < deadline, "the export worker outlived its killed server"
            time.sleep(0.1)
    finally:
        proc.kill()

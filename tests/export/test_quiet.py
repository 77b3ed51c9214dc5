"""Native libraries' lines go to a log file, Python's stderr keeps the terminal; verify's int8 rows say
how they are judged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autohas_edge.export.verify import verify_bundle
from autohas_edge.export.verify_cli import format_report

SCRIPT = """
import os, sys
from pathlib import Path
from autohas_edge.export.quiet import native_log
with native_log(Path(sys.argv[1])):
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\\n")  # as C++ code writes
    print("autohas export: a real error", file=sys.stderr)
os.write(2, b"after the block\\n")
"""


def test_native_lines_go_to_the_log_and_python_errors_to_the_terminal(tmp_path: Path) -> None:
    log = tmp_path / "native.log"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, check=True
    )
    assert "oneDNN" not in done.stderr and "oneDNN" in log.read_text()
    assert "autohas export: a real error" in done.stderr  # what the user must see
    assert "after the block" in done.stderr  # fd 2 is the terminal again afterwards


def test_verify_in_a_process_prints_no_runtime_banners(tiny_bundle: Path, tmp_path: Path) -> None:
    log = tmp_path / "native.log"
    env = {**os.environ, "AUTOHAS_NATIVE_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-m", "autohas_edge.server.cli", "verify", str(tiny_bundle)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "XNNPACK" not in done.stderr and "absl" not in done.stderr
    report = format_report(verify_bundle(tiny_bundle))
    int8_rows = [line for line in report.splitlines() if "int8" in line]
    assert int8_rows and all("judged on class agreement" in row for row in int8_rows)
    assert report.rstrip().endswith("0 problems")

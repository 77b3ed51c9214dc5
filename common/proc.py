"""Is a process still there? Used to clean up after killed processes and to follow a parent."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def is_alive(pid: int) -> bool:
    """True while a process `pid` exists, including one this process may not signal."""
    if pid <= 0:  # 0 and negative pids name process groups for os.kill, never one process
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to another user
        return True
    return True


def process_identity(pid: int) -> str | None:
    """Something that changes when process `pid` ends even if its pid is reused; None when it is gone.

    On Linux that is the process's start time; without a readable `/proc/<pid>` (macOS, or a /proc
    mounted with hidepid) only whether the pid exists.
    """
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "alive" if is_alive(pid) else None
    # field 22 (starttime); the command name before it is in parentheses and may hold spaces
    return stat.rsplit(")", 1)[1].split()[19]


def exit_when_gone(pid: int, period: float = 0.5) -> None:
    """Exit (code 3) once process `pid` is gone: a killed server leaves no search worker running, and a
    gone job worker leaves no torchrun rank running."""
    alive = process_identity(pid)

    def watch() -> None:
        while process_identity(pid) == alive is not None:
            time.sleep(period)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()

"""Keep the converters' chatter (warnings, info logs, progress output) off the user's terminal.

Python-level noise is dropped inside `quiet()`. What the C++ parts of TensorFlow / LiteRT / XNNPACK /
oneDNN / absl write straight to file descriptor 2 cannot be caught in Python: `native_log()` points
that descriptor at a log file for a whole command, while Python's own `sys.stderr` (error messages,
progress bars) keeps the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

#: C++ log threshold for the TF Lite / XLA parts of litert-torch (2 = warnings and errors only)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_LOGGERS = ("torch", "onnxscript", "onnx_ir", "root", "absl")
#: where `native_log()` writes unless given a path
LOG_ENV = "AUTOHAS_NATIVE_LOG"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Python warnings, library loggers below ERROR and stray stderr prints inside the block."""
    levels = {name: logging.getLogger(name if name != "root" else None).level for name in _LOGGERS}
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in _LOGGERS:
            logging.getLogger(name if name != "root" else None).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name if name != "root" else None).setLevel(level)


def default_log_path() -> Path:
    """`$AUTOHAS_NATIVE_LOG`, else `native.log` in the cache folder (`$AUTOHAS_CACHE`, else
    `~/.cache/autohas-edge`)."""
    if os.environ.get(LOG_ENV):
        return Path(os.environ[LOG_ENV])
    cache = os.environ.get("AUTOHAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "autohas-edge"
    )
    return Path(cache) / "native.log"


@contextlib.contextmanager
def native_log(path: Path | None = None) -> Iterator[Path]:
    """Inside the block, whatever native code writes to fd 2 is appended to `path` (see
    `default_log_path`); Python's `sys.stderr` still reaches the terminal it reached before."""
    path = path or default_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:  # nowhere to write: the noise stays where it was
        yield path
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(log, 2)
    os.close(log)
    python_stderr = sys.stderr
    if _is_fd2(python_stderr):  # (under pytest's capture it is not: leave it alone)
        sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding="utf-8")  # noqa: SIM115
    try:
        yield path
    finally:
        sys.stderr.flush()
        if sys.stderr is not python_stderr:
            sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)


def _is_fd2(stream: object) -> bool:
    try:
        return int(stream.fileno()) == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False

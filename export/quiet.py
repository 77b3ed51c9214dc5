"""Keep the converters' chatter (warnings, info logs, progress output) off the user's terminal."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

#: C++ log threshold for the TF Lite / XLA parts of litert-torch (2 = warnings and errors only)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_LOGGERS = ("torch", "onnxscript", "onnx_ir", "root", "absl")


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

"""Keep onnxruntime's telemetry off on the device: no device id, no event queue, nothing sent.

Official onnxruntime builds (1.29 and later on Linux) collect trace events through the 1DS SDK and
keep a persistent device id and an event database under `~/.cache/Microsoft/DeveloperTools`.
`ORT_DISABLE_TELEMETRY=1`, set before onnxruntime initialises, stops all of it for the process
(onnxruntime's Privacy.md); the SDK sets it when it is imported unless the app set it itself, and
also calls `onnxruntime.disable_telemetry_events()` (for an onnxruntime the app loaded earlier).
"""

from __future__ import annotations

import os
from typing import Any

ENV = "ORT_DISABLE_TELEMETRY"


def disable_environment() -> None:
    """Set `ORT_DISABLE_TELEMETRY=1` unless the app chose a value itself."""
    os.environ.setdefault(ENV, "1")


def disable_events(ort: Any) -> None:
    """Turn off onnxruntime's non-essential telemetry events (the API exists in onnxruntime >= 1.x)."""
    disable = getattr(ort, "disable_telemetry_events", None)
    if callable(disable) and os.environ.get(ENV) == "1":
        disable()


disable_environment()  # on import: the SDK's package imports this module first

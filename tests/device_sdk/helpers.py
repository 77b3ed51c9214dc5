"""Constants shared by the device SDK tests."""

from __future__ import annotations

TASK = "signals"

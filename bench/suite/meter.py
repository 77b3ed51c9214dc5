"""Device-seconds: the CPU and wall-clock time a method uses, with bookkeeping paused.

CPU time is this process's user + system time (all threads). With one torch thread it is the
figure least disturbed by other jobs on a shared machine, so budgets are enforced in CPU seconds;
wall seconds are recorded beside them. Test-set evaluations, curve bookkeeping and latency
measurements run inside `paused()`: they are the judge's work, not the method's.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Cost:
    """Device-seconds used: CPU and wall clock."""

    cpu: float = 0.0
    wall: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cpu + other.cpu, self.wall + other.wall)

    def to_json(self) -> dict[str, float]:
        """A JSON-ready dict (rounded to milliseconds)."""
        return {"cpu": round(self.cpu, 3), "wall": round(self.wall, 3)}


class Meter:
    """Counts device-seconds from creation on, except inside `paused()`."""

    def __init__(self) -> None:
        self._cpu0, self._wall0 = cpu_seconds(), time.perf_counter()
        self._paused = Cost()

    def read(self) -> Cost:
        """Device-seconds used so far (paused intervals excluded)."""
        raw = Cost(cpu_seconds() - self._cpu0, time.perf_counter() - self._wall0)
        return Cost(raw.cpu - self._paused.cpu, raw.wall - self._paused.wall)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Exclude what runs inside from the count."""
        cpu, wall = cpu_seconds(), time.perf_counter()
        try:
            yield
        finally:
            self._paused = self._paused + Cost(cpu_seconds() - cpu, time.perf_counter() - wall)

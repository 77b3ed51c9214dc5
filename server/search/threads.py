"""How many CPU threads torch gets: the cores this process may really use, shared among its workers.

`os.cpu_count()` reports the host's cores, not what an affinity mask or a container's CPU quota leaves
this process; more threads than usable cores make OpenMP threads spin against each other (on a busy
2-core machine a search ran 4x slower with 2 threads than with 1). So the default is
`usable_cores() // workers`, and OpenMP's idle threads sleep instead of spinning (`OMP_WAIT_POLICY`).

Reproducibility: for a seed, a search is bit-reproducible at a fixed thread count. torch's CPU kernels
split some reductions (full sums, dot products, convolution weight gradients) by thread count, so
another count changes the last bits of those results, and training amplifies them: compare runs at
the same `--threads`. (torch offers no thread-count-invariant mode for these kernels.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (
    Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
    Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def usable_cores() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup CPU quota if one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, quota) if quota else cores)


def cgroup_quota() -> int | None:
    """The container's CPU quota in whole cores (rounded up), or None when unlimited or unknown."""
    try:
        if CGROUP_V2.exists():
            quota, period = CGROUP_V2.read_text().split()[:2]
            return None if quota == "max" else math.ceil(int(quota) / int(period))
        if CGROUP_V1[0].exists():
            quota_us = int(CGROUP_V1[0].read_text())
            return None if quota_us <= 0 else math.ceil(quota_us / int(CGROUP_V1[1].read_text()))
    except (OSError, ValueError):
        return None
    return None


def default_threads(workers: int = 1) -> int:
    """torch intra-op threads per worker when the user asks for none: the usable cores, shared."""
    return max(1, usable_cores() // max(1, workers))


def resolve_threads(requested: int, workers: int = 1) -> int:
    """`requested` if > 0, else the default for `workers` workers (ValueError below 0)."""
    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0: one per usable core), got {requested}")
    return requested or default_threads(workers)


def prepare_environment() -> None:
    """Let idle OpenMP threads sleep rather than spin; takes effect only before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def apply_threads(requested: int, workers: int = 1) -> int:
    """Set torch's intra-op threads (see `resolve_threads`) and return the number set."""
    import torch

    threads = resolve_threads(requested, workers)
    torch.set_num_threads(threads)
    return threads

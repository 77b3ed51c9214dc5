"""Measured compute: training examples processed (forward + backward) and seconds, per model kind.

The meter installs one global module forward hook (``torch.nn.modules.module``) and counts, for every
call of a top-level model (the engine's ``SuperNet`` or a ``ChildNet``), the examples it saw; when the
output requires a gradient it hooks that output tensor, so every backward pass that flows through it
adds the batch size again. Counting at run time instead of from a formula keeps the figures honest
whatever the engine does inside: the first iteration, the temporary-weight steps of the second
iteration (the fast path back-propagates twice per forward when a label-smoothed loss basis is
present, and both passes count), the validation pass of the encodings, and the retraining of the
derived model. Nothing in the engine is changed.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from autohas_edge.server.search.models import ChildNet
from autohas_edge.server.search.supernet import SuperNet

#: model classes whose calls are counted (sub-modules are not: one call of the model is one pass)
COUNTED = (SuperNet, ChildNet)


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Reading:
    """Compute used so far: trained examples (backward passes), forward-only examples, seconds."""

    examples: int
    forward_only: int
    seconds: float
    cpu_seconds: float
    by_model: dict[str, int]


class ComputeMeter:
    """Counts examples and time while active (``with ComputeMeter() as meter: ...``)."""

    def __init__(self) -> None:
        self._backward: Counter[str] = Counter()
        self._forward_only: Counter[str] = Counter()
        self._handle: RemovableHandle | None = None
        self._start_wall = self._start_cpu = 0.0

    def __enter__(self) -> ComputeMeter:
        self._handle = nn.modules.module.register_module_forward_hook(self._on_forward)
        self._start_wall, self._start_cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_forward(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not isinstance(module, COUNTED) or not inputs or not isinstance(output, torch.Tensor):
            return
        name, batch = type(module).__name__, len(inputs[0])
        if output.requires_grad:
            output.register_hook(lambda grad: self._count_backward(name, batch))
        else:  # evaluation (no_grad): costs time, but is not a training example
            self._forward_only[name] += batch

    def _count_backward(self, name: str, batch: int) -> None:
        self._backward[name] += batch

    def read(self) -> Reading:
        """The totals since the meter was entered."""
        return Reading(
            sum(self._backward.values()),
            sum(self._forward_only.values()),
            time.perf_counter() - self._start_wall,
            cpu_seconds() - self._start_cpu,
            dict(self._backward),
        )

"""Search tests run single-threaded: their tensors are tiny, and on a shared CI box intra-op threads
only add scheduling latency (they spin-wait for cores other jobs hold)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Multi-worker search with torch.distributed: one rank per process, as started by `torchrun`.

`torchrun --nproc-per-node N -m server.search.cli ...` (or `autohas search --workers N`, which starts
torchrun itself) runs the same search in N processes: gloo on CPU, NCCL on GPUs (rank r on GPU
LOCAL_RANK), several nodes alike with torchrun's `--nnodes`. Every rank samples its own batches (and, for
the controller, its own pairs) and does 1/N of each step's work; the gradients of the shared weights and of
the encodings are averaged across ranks, so every rank holds the same weights and encodings after every
step. Only rank 0 reads and writes the run directory (it sends a resumed checkpoint to the others).

`Comm` is the whole interface the search uses; a single process gets `Comm()` and every call is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

#: Distinct per-rank seeds for data sampling (rank 0 keeps the configured seed)
RANK_SEED_STRIDE = 7919


@dataclass(frozen=True)
class Comm:
    """This process's place among the search workers, and the collectives the search needs."""

    rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one worker."""
        return self.world_size > 1

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average `tensor` in place across ranks (and return it)."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)
        return tensor

    def mean(self, value: float) -> float:
        """The mean of a Python number across ranks."""
        if not self.active:
            return value
        return float(
            self.mean_(torch.tensor([value], dtype=torch.float64, device=self._device()))[0]
        )

    def flags(self, *values: bool) -> tuple[bool, ...]:
        """Rank 0's values of some flags, on every rank (one broadcast): decisions all ranks must share."""
        if not self.active:
            return values
        t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=self._device())
        dist.broadcast(t, src=0)
        return tuple(bool(v) for v in t.tolist())

    def from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` (any picklable value, tensors included), on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def share(self, n: int, minimum: int = 1) -> int:
        """This rank's part of a per-step amount `n`: the parts add up to `n` (unless raised to `minimum`)."""
        return max(minimum, n // self.world_size + int(self.rank < n % self.world_size))

    def rank_seed(self, seed: int) -> int:
        """The data-sampling seed of this rank."""
        return seed + RANK_SEED_STRIDE * self.rank

    def _device(self) -> torch.device:
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """Whether this process is one of several workers started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Comm, torch.device, bool]:
    """Join the process group torchrun described in the environment.

    Returns (comm, the device this rank uses, whether this call created the group). A single process, or
    a group someone else initialised, is taken as it is.
    """
    if not launched_by_torchrun():
        return Comm(), device, False
    created = not dist.is_initialized()
    if device.type == "cuda":
        local, per_node = (
            int(os.environ.get("LOCAL_RANK", "0")),
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        )
        if per_node > torch.cuda.device_count():
            raise ValueError(
                f"{per_node} search workers on this node but {torch.cuda.device_count()} GPUs: "
                "NCCL needs one GPU per worker (use fewer workers or --device cpu)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    comm = Comm(dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return comm, device, created


def teardown(created: bool) -> None:
    """Leave the process group if `setup` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()

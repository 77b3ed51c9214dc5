"""Several workers build the temporary weights W' that one worker builds from the whole batch.

Two real gloo processes (torch.multiprocessing, a file store) each hold half of a fixed batch; the
networks are in eval mode, because batch-norm batch statistics are per worker in any data-parallel
training (as without SyncBatchNorm), which is the one thing that may differ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from autohas_edge.server.search import SearchConfig, SuperNet
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.engine import Batches, Searcher
from autohas_edge.server.search.iterations import HPMix
from autohas_edge.server.search.models import BlockSpec, Layout
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace

LAYOUT = Layout("conv1d", 8, 3, 1, (BlockSpec(8, 8), BlockSpec(8, 12, 2)))
SPACE = SearchSpace(
    (
        Choice("b0.kernel", (3, 5)),
        Choice("b0.expansion", (1, 3)),
        Choice("b1.kernel", (3,)),
        Choice("b1.expansion", (1, 3)),
        Choice("s1.width", (0.5, 1.0)),
    ),
    (
        Choice("learning_rate", (0.5, 0.05), CONTINUOUS),
        Choice("weight_decay", (1e-2, 1e-4), CONTINUOUS),
        Choice("optimizer", ("sgd", "adam")),
        Choice("loss", ("ce", "ls0.2")),
        Choice("augment", ("none",)),
    ),
)
BATCH = 16


class FixedBatches(Batches):
    """A data source that always gives the same training rows (this worker's share of them)."""

    def train(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train[:n], self.y_train[:n]


def _w_prime(
    rank: int, world_size: int, explicit: bool, window: bool, joined: bool = True
) -> torch.Tensor:
    """W' on `rank` of `world_size` workers, each holding its contiguous share of one fixed batch
    (`joined=False`: that share alone, without the process group); `window`: the windowed form's
    W'(K) after three first iterations, else the one-step form's W'."""
    torch.manual_seed(0)
    net = SuperNet(LAYOUT, SPACE.arch, (1, 12), 3).eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 1, 12, generator=gen), torch.randint(0, 3, (BATCH,), generator=gen)
    share = BATCH // world_size
    x, y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
    batches = FixedBatches(x, y, x, y, 1.0, gen)
    path = "explicit" if explicit else "fast"
    config = SearchConfig(
        encoding_batch_size=BATCH,
        batch_size=BATCH,
        grad_clip=1.0,
        weights_path=path,
        warmup_fraction=0.0,
        hp_signal="window" if window else "one-step",
    )
    comm = Comm(rank, world_size, "gloo") if joined and world_size > 1 else Comm()
    searcher = Searcher(net, SPACE, batches, config, comm)
    with torch.no_grad():
        for i, logits in enumerate(searcher.logits.values()):
            logits.copy_(torch.linspace(-1.0, 1.0, len(logits)) * (i + 1) / 3)
    probs = searcher.probabilities()
    arch = {c.name: probs[c.name] for c in SPACE.arch}
    if window:
        for _ in range(3):
            searcher.train_weights({k: v.detach() for k, v in probs.items()})
    return searcher._combined_weights(arch, HPMix.from_probs(SPACE, probs)).detach()


def _rank(rank: int, store: str, out: str, explicit: bool, window: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.save(_w_prime(rank, 2, explicit, window), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("window", [False, True], ids=["one-step", "window"])
@pytest.mark.parametrize("explicit", [False, True], ids=["fast", "explicit"])
def test_two_workers_build_the_single_workers_temporary_weights(
    tmp_path: Path, explicit: bool, window: bool
) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path), explicit, window), nprocs=2)
    one = _w_prime(0, 1, explicit, window)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)  # the same on every worker
    torch.testing.assert_close(ranks[0], one, rtol=1e-5, atol=1e-6)  # and what one worker builds
    # rank 0's half without the all-reduce: not the same step
    alone = _w_prime(0, 2, explicit, window, joined=False)
    assert not torch.allclose(alone, one, rtol=1e-5, atol=1e-6)

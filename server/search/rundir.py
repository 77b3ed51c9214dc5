"""The run directory (docs/architecture.md §3): the resumable search checkpoint, the derived model,
result.json and the plot."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autohas_edge.common.fs import atomic_write_json, sha256_file
from autohas_edge.server.search.config import RETRAIN_ONLY, SearchConfig
from autohas_edge.server.search.models import ModelArgs, build_model
from autohas_edge.server.search.plot import plot_search
from autohas_edge.server.search.space import SearchSpace

if TYPE_CHECKING:
    from autohas_edge.server.search.strategies import Strategy

CHECKPOINT, MODEL, RESULT, PLOT = "search.pt", "model.pt", "result.json", "search.png"


def save_checkpoint(
    out: Path,
    searcher: Strategy,
    config: SearchConfig,
    seconds: float,
    done: bool,
    rank_gens: list[torch.Tensor] | None = None,
) -> None:
    """Write search.pt atomically: a crash never leaves a half-written checkpoint.

    `rank_gens`: every search worker's data-sampling generator state, in rank order (multi-worker runs).
    """
    state = {
        "config": config.to_json(),
        "dataset_sha256": dataset_digest(config.dataset),
        "searcher": searcher.state_dict(),
        "search_seconds": seconds,
        "done": done,
        "rank_gens": rank_gens or [],
    }
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / CHECKPOINT)


def dataset_digest(dataset: str) -> str:
    """The SHA-256 of a dataset file ("" for a built-in dataset's name): what a resume must match.

    Hashed once per version of the file, not at every checkpoint."""
    path = Path(dataset)
    if not path.is_file():
        return ""
    stat = path.stat()
    return _sha256(str(path), (stat.st_ino, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _sha256(path: str, stamp: tuple[int, int, int]) -> str:
    """`sha256_file`, remembered per (path, stamp): a changed file has another stamp."""
    return sha256_file(path)


def read_checkpoint(out: Path, config: SearchConfig) -> dict[str, Any] | None:
    """search.pt's content if there is one (ValueError if it was written under another config).

    Keys: `searcher` (for `Searcher.load_state_dict`), `search_seconds`, `done`, `rank_gens` (the workers'
    data-sampling generator states in rank order; [] before multi-worker support).
    """
    path = out / CHECKPOINT
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(
        path, map_location="cpu", weights_only=True
    )  # generator states must stay on CPU
    saved = {k: v for k, v in state["config"].items() if k not in RETRAIN_ONLY}
    wanted = config.search_part()
    # the same data at another path (a moved data dir, another Ray node) resumes
    if state.get("dataset_sha256") and state["dataset_sha256"] == dataset_digest(config.dataset):
        saved["dataset"] = wanted["dataset"]
    if saved != wanted:
        raise ValueError(
            f"{path} holds a search with a different config; use a new output directory "
            f"(only {', '.join(RETRAIN_ONLY)} may change)"
        )
    state.setdefault("rank_gens", [])
    return state


def write_run(
    out: Path,
    result: dict[str, Any],
    model: nn.Module,
    args: ModelArgs,
    searcher: Strategy,
    space: SearchSpace,
) -> None:
    """Write model.pt (rebuildable: model_args + state_dict + config), result.json and search.png."""
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"model_args": args, "state_dict": state, "config": result["config"]}, out / MODEL)
    # atomic: a reader (the server, export, a resumed run) never sees half a result.json
    atomic_write_json(out / RESULT, result, mode=0o644)
    if result["config"].get("plot", True):
        plot_search(searcher.history.__dict__, space, out / PLOT, result)


def load_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The derived, retrained model (eval mode, on CPU) and the run's result.json."""
    run = Path(run_dir)
    result = json.loads((run / RESULT).read_text())
    saved = torch.load(run / MODEL, map_location="cpu", weights_only=True)
    model = build_model(saved["model_args"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), result

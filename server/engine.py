"""The one adapter between the server and the search engine (`server.search`) and exporter (`export`).

The job manager imports the module named by `ServerConfig.engine` (this one by default): it calls
`check_spec` when a job is submitted, `run_job` in the job's worker process and `export_bundle` in the
export worker. Another engine (the tests' fast fake) provides the same three functions and raises
`Cancelled` when `should_stop()` turns true. torch is imported only inside `run_job` and `export_bundle`,
so the server process never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autohas_edge.server.domain import ModelSummary
from autohas_edge.server.errors import Cancelled

__all__ = ["Cancelled", "check_spec", "export_bundle", "run_job", "search_config"]

ProgressFn = Callable[[dict[str, Any]], None]

#: JobSpec field -> SearchConfig field; 0 / "" means "engine default" and is not passed on.
_SPEC_TO_CONFIG = {
    "mode": "mode",
    "strategy": "strategy",
    "steps": "steps",
    "max_params": "max_params",
    "max_flops": "max_flops",
    "max_latency_ms": "max_latency_ms",
    "seed": "seed",
    "retrain_steps": "retrain_steps",
    "within_points": "within_points",
}
#: JobSpec fields this engine has no setting for: it splits the data itself (10% validation, 20% test)
_UNSUPPORTED = ("validation_fraction", "test_fraction")
#: About this many search checkpoints a job (the engine's own default, every 100 steps, would leave a short
#: job with none, so a killed server would restart it from step 0); never rarer than every 100 steps.
CHECKPOINTS_PER_SEARCH = 20
MAX_CHECKPOINT_EVERY = 100


def check_spec(spec: Mapping[str, Any]) -> None:
    """Raise ValueError naming the field if the engine cannot run this job spec (cheap: no torch)."""
    from autohas_edge.server.search import STRATEGIES  # torch-free

    if spec.get("strategy") and spec["strategy"] not in STRATEGIES:
        raise ValueError(
            f"spec.strategy: {spec['strategy']!r} is not one of {', '.join(STRATEGIES)}"
        )
    for name in _UNSUPPORTED:
        if spec.get(name):
            raise ValueError(
                f"spec.{name}: not supported by this search engine (leave it 0: it holds out "
                "10% for validation and 20% for test)"
            )


def checkpoint_every(steps: int) -> int:
    """Search steps between checkpoints: about `CHECKPOINTS_PER_SEARCH` a job, at least one every 100 steps.

    It depends on the step budget alone, so a resumed job builds the same config as its first start (the
    engine refuses to resume a checkpoint written under another config).
    """
    return max(1, min(MAX_CHECKPOINT_EVERY, math.ceil(steps / CHECKPOINTS_PER_SEARCH)))


#: noise on the normalisation statistics of models trained on the data of fewer than
#: `EXACT_STATS_USERS` people (`runner.norm_stats`): there a per-feature mean and std could describe
#: one person; over a larger cohort they are the cohort's statistics and stay exact (the noise is
#: harmless to a model trained with it, but it moves the whole search onto another trajectory, and
#: on the demo's 15 users one such trajectory ended 8 points lower)
NORM_NOISE = 0.05
EXACT_STATS_USERS = 5


def norm_noise(dataset: str) -> float:
    """`NORM_NOISE` for a snapshot of fewer than `EXACT_STATS_USERS` users (by its `owner_app` /
    `owner_user` arrays), else 0; a dataset without owners, or not there yet, counts as one person's."""
    import numpy as np

    if not Path(dataset).is_file():
        return NORM_NOISE
    with np.load(dataset) as arrays:
        if "owner_user" not in arrays.files:
            return NORM_NOISE
        owners = set(zip(arrays["owner_app"].tolist(), arrays["owner_user"].tolist(), strict=True))
    return NORM_NOISE if len(owners) < EXACT_STATS_USERS else 0.0


def search_config(spec: Mapping[str, Any], dataset: str, device: str) -> Any:
    """The engine's `SearchConfig` for a job spec over a snapshot `.npz` (ValueError if invalid)."""
    from autohas_edge.server.search import SearchConfig

    check_spec(spec)
    kwargs: dict[str, Any] = {"dataset": dataset, "device": device}
    for spec_name, config_name in _SPEC_TO_CONFIG.items():
        value = spec.get(spec_name)
        if value or (spec_name == "seed" and value is not None):
            kwargs[config_name] = value
    config = SearchConfig(norm_noise=norm_noise(dataset), **kwargs)
    return config.replace(checkpoint_every=checkpoint_every(config.steps))


def progress_dict(event: Any) -> dict[str, Any]:
    """A `server.search.ProgressEvent` as the plain dict `JobProgress.from_dict` reads."""
    encodings = [
        {"name": name, "candidates": [str(c) for c in probs], "probabilities": list(probs.values())}
        for name, probs in (event.encodings or {}).items()
    ]
    return {
        "stage": event.stage,
        "step": event.step,
        "total_steps": event.total_steps,
        "train_loss": event.train_loss,
        "val_loss": event.val_loss,
        "learning_rate": event.learning_rate,
        "encodings": encodings,
    }


def run_job(
    spec: Mapping[str, Any],
    dataset: str,
    out_dir: str,
    device: str,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
    workers: int = 1,
    rendezvous: Mapping[str, Any] | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Run a search into `out_dir` (resuming from its checkpoint); returns the run's `result.json` dict.

    `workers` > 1 runs it in that many processes under torchrun (`run_search_workers`). `rendezvous`
    (the fields of `launcher.Rendezvous`): this machine's `workers` are part of a search over several
    machines; on any machine but node 0 the result is `{}`. `threads`: torch threads per worker (0: the
    usable cores shared among this machine's workers).
    """
    from autohas_edge.server.search import (
        Rendezvous,
        SearchCancelled,
        apply_threads,
        run_search,
        run_search_workers,
    )

    config = search_config(spec, dataset, device)
    meeting = Rendezvous(**rendezvous) if rendezvous else None
    if workers <= 1 and meeting is None:
        apply_threads(threads)  # the launcher sets each rank's share when there are several
    report = lambda e: on_progress(progress_dict(e))  # noqa: E731
    try:
        if workers > 1 or meeting is not None:
            return dict(
                run_search_workers(config, out_dir, workers, report, should_stop, threads, meeting)
            )
        result: dict[str, Any] = run_search(
            config, Path(out_dir), on_progress=report, should_stop=should_stop
        )
    except SearchCancelled as e:
        raise Cancelled(str(e)) from e
    return result


def export_bundle(run_dir: str, out_dir: str, formats: list[str]) -> None:
    """Export a finished run to a verified bundle at `out_dir` (empty formats = all of them)."""
    import autohas_edge.export as export

    out = Path(out_dir)
    # Synthetic reference inputs: every device of the app downloads the bundle, so it must not carry
    # any user's examples.
    fmts = formats or export.ALL_FORMATS
    export.export_run(run_dir, out.parent, fmts, name=out.name, reference="synthetic")


def summarize(result: Mapping[str, Any]) -> ModelSummary:
    """The `ModelSummary` of a run's `result.json` dict."""
    return ModelSummary(
        architecture={str(k): str(v) for k, v in (result.get("architecture") or {}).items()},
        hyperparameters={str(k): str(v) for k, v in (result.get("hyperparameters") or {}).items()},
        params=int(result.get("params") or 0),
        test_accuracy=float(result.get("test_accuracy") or 0.0),
        search_seconds=float(result.get("search_seconds") or 0.0),
        retrain_seconds=float(result.get("retrain_seconds") or 0.0),
        race_seconds=float(result.get("race_seconds") or 0.0),
    )

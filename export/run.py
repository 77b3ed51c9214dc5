"""Export a run directory (docs/architecture.md §3) written by the search engine."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.export.bundle import CALIBRATION_COUNT, ExportReport, export_model
from autohas_edge.export.errors import ExportError
from autohas_edge.export.formats import ALL_FORMATS, Format, parse_formats


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    formats: str | Iterable[str | Format] = ALL_FORMATS,
    *,
    name: str | None = None,
    on_stage: Callable[[str], None] | None = None,
    reference: str = "test",
) -> ExportReport:
    """Export the searched model in `run_dir` to the verified bundle `out_dir/<run name>`.

    `reference="synthetic"` keeps real examples out of reference.npz (see `export_model`).
    """
    fmts = parse_formats(formats)
    run = Path(run_dir)
    if not run.is_dir():
        raise ExportError(run, "run directory not found")
    result = read_result(run)
    model, result = _load_model(run, result)
    data = _load_dataset(run, result)
    return export_model(
        model,
        result,
        out_dir,
        fmts,
        calibration_sample(data.x_train),
        np.asarray(data.x_test, dtype=np.float32),
        np.asarray(data.y_test),
        name=name or run.resolve().name,
        source=str(run / "model.pt"),
        result_source=str(run / "result.json"),
        on_stage=on_stage,
        reference=reference,
    )


def read_result(run: Path) -> dict[str, Any]:
    """`run/result.json`, or an ExportError naming it."""
    path = run / "result.json"
    if not path.is_file():
        raise ExportError(path, "missing (is this a finished search run?)")
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(path, f"not valid JSON ({err})") from err
    return result


def calibration_sample(
    x_train: np.ndarray, count: int = CALIBRATION_COUNT, seed: int = 0
) -> np.ndarray:
    """A fixed random subset of the training split for int8 calibration."""
    x_train = np.asarray(x_train, dtype=np.float32)
    rows = np.random.default_rng(seed).choice(
        len(x_train), size=min(count, len(x_train)), replace=False
    )
    return x_train[np.sort(rows)]


def _load_model(run: Path, result: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from autohas_edge.server.search import load_model

    checkpoint = run / "model.pt"
    if not checkpoint.is_file():
        raise ExportError(checkpoint, "missing (is this a finished search run?)")
    try:
        model, loaded = load_model(run)
    except Exception as err:
        # load_state_dict's errors name "state_dict"; bad model_args raise KeyError / TypeError
        if isinstance(err, (KeyError, TypeError)) or "state_dict" in str(err):
            raise ExportError(checkpoint, f"checkpoint does not match its config: {err}") from err
        raise ExportError(
            checkpoint, f"cannot read the checkpoint: {type(err).__name__}: {err}"
        ) from err
    return model, loaded or result


def _load_dataset(run: Path, result: dict[str, Any]) -> Any:
    from autohas_edge.server.search import load_dataset

    spec = dataset_spec(result, run / "result.json")
    config = result.get("config") or {}
    try:  # read the examples as the search did (a run from before layouts has neither key)
        return load_dataset(
            spec, layout=config.get("layout", "auto"), channels=config.get("channels", "")
        )
    except Exception as err:
        raise ExportError(run / "result.json", f"cannot load dataset {spec!r}: {err}") from err


def dataset_spec(result: dict[str, Any], source: str | Path = "result.json") -> str:
    """The `--dataset` spec the run was searched on (config first, then the dataset's name)."""
    config = result.get("config") or {}
    spec = config.get("dataset") or (result.get("dataset") or {}).get("name")
    if not spec:
        raise ExportError(source, "names no dataset (config.dataset or dataset.name)")
    return str(spec)

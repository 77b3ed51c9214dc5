"""The results file: JSON lines, one record per calibrated task and per finished (task, method,
seed, budget) cell, appended and flushed as each finishes, so a killed run resumes where it stopped.

The first line is a header with the preset's settings and the machine; resuming under other
settings, or on another machine, is refused (their figures would not be comparable: budgets are
CPU seconds calibrated on the machine, and the same step costs ~1.5x more CPU seconds on one
2-core machine than on another). A torn last line (a kill mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import cpu_model

CellKey = tuple[str, str, int, float]  # task, method, seed, budget fraction


def cell_key(record: dict[str, Any]) -> CellKey:
    """The key of a cell record."""
    return record["task"], record["method"], int(record["seed"]), float(record["fraction"])


@dataclass
class Results:
    """Everything in a results file."""

    header: dict[str, Any] | None = None
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: dict[CellKey, dict[str, Any]] = field(default_factory=dict)


def load(path: Path) -> Results:
    """Read a results file (an absent file is empty)."""
    results = Results()
    if not path.exists():
        return results
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        kind = record.pop("kind", None)
        if kind == "header":
            results.header = record
        elif kind == "calibration":
            results.calibrations[record["task"]] = record
        elif kind == "cell":
            results.cells[cell_key(record)] = record
    return results


def append(path: Path, kind: str, record: dict[str, Any]) -> None:
    """Append one record and make it durable before going on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        torn = f.tell() > 0 and _last_byte(path) != b"\n"
        if torn:
            f.write("\n")  # end a line torn by a kill, so it stays one unreadable line
        f.write(json.dumps({"kind": kind, **record}, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def compatible(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """The same settings; of the engine's defaults, those both sides know must agree (a field the
    engine added since, with a default, changes nothing already measured)."""
    engine_saved, engine_now = saved.get("engine", {}), now.get("engine", {})
    shared = set(engine_saved) & set(engine_now)
    if any(engine_saved[k] != engine_now[k] for k in shared):
        return False
    strip = lambda d: {k: v for k, v in d.items() if k != "engine"}  # noqa: E731
    return strip(saved) == strip(now)


def this_machine() -> str:
    """The CPU model and core count: what a budget of CPU seconds depends on."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def check_machine(path: Path, results: Results, machine: str) -> None:
    """SystemExit when `results` were measured on another machine than `machine` (a file from
    before the header named its machine passes)."""
    saved = (results.header or {}).get("machine")
    if saved is not None and saved != machine:
        raise SystemExit(
            f"{path} was measured on {saved}, this is {machine}: its budgets are that machine's CPU"
            " seconds; pass --restart to start over here or --results to use another file"
        )


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def open_results(
    path: Path, settings: dict[str, Any], restart: bool = False, machine: str = ""
) -> Results:
    """The file's results under `settings` on `machine` (default: this one); a header is written
    to a new file; `restart` empties it."""
    machine = machine or this_machine()
    if restart and path.exists():
        path.unlink()
    results = load(path)
    if results.header is None:
        if path.exists() and path.stat().st_size:
            raise SystemExit(f"{path} has no header line; move it away or pass --restart")
        append(path, "header", {"settings": settings, "machine": machine})
        return load(path)
    check_machine(path, results, machine)
    if not compatible(results.header["settings"], settings):
        raise SystemExit(
            f"{path} was written with other settings ({results.header['settings']}, now {settings});"
            " pass --restart to start over or --results to use another file"
        )
    return results


def rewrite(path: Path, results: Results) -> None:
    """Replace the file by `results` (header, calibrations, cells), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    append(tmp, "header", results.header or {})
    for record in results.calibrations.values():
        append(tmp, "calibration", record)
    for record in results.cells.values():
        append(tmp, "cell", record)
    os.replace(tmp, path)


def retract(results: Results, methods: set[str], settings: dict[str, Any]) -> Results:
    """`results` without the cells of `methods` and under the header `settings` (their method
    changed; every other cell stays valid)."""
    cells = {k: r for k, r in results.cells.items() if r["method"] not in methods}
    header = {**(results.header or {}), "settings": settings}
    return Results(header, dict(results.calibrations), cells)

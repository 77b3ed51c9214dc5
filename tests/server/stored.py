"""Read a server's SQLite file directly (read-only), to check what is really on disk, not what it reports."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autohas_edge.common.tensor import DTYPES
from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from autohas_edge.server.api import serde
from autohas_edge.server.domain import ExampleBatch
from autohas_edge.server.examples import batch_digest
from autohas_edge.server.store import DB_FILE


@dataclass(frozen=True)
class Row:
    """One stored batch, as the examples table holds it."""

    device_id: str
    batch_id: str
    task_id: str
    app_id: str
    user_id: str
    count: int
    dtype: str
    shape: tuple[int, ...]
    features: bytes
    labels: bytes
    digest: str


def connect(data_dir: Path) -> sqlite3.Connection:
    """A read-only connection to a data dir's database (safe beside a running server: WAL mode)."""
    return sqlite3.connect(f"file:{data_dir / DB_FILE}?mode=ro", uri=True, timeout=30)


def stored_rows(data_dir: Path) -> list[Row]:
    """Every stored example batch."""
    with closing(connect(data_dir)) as conn:
        rows = conn.execute(
            "SELECT device_id, batch_id, task_id, app_id, user_id, count, dtype, shape, "
            "features, labels, digest FROM examples"
        ).fetchall()
    return [Row(*r[:7], tuple(json.loads(r[7])), bytes(r[8]), bytes(r[9]), r[10]) for r in rows]


def integrity(data_dir: Path) -> str:
    """SQLite's own check of the file ("ok" when sound)."""
    with closing(connect(data_dir)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def malformed(row: Row, num_classes: int) -> str:
    """Why a stored batch is not whole and consistent ("" when it is): sizes, labels, finiteness, digest."""
    if row.dtype not in DTYPES or not row.shape or row.shape[0] != row.count or row.count < 1:
        return f"dtype {row.dtype} / shape {row.shape} / count {row.count} disagree"
    dtype = DTYPES[row.dtype].newbyteorder("<")
    if (
        len(row.features) != math.prod(row.shape) * dtype.itemsize
        or len(row.labels) != 8 * row.count
    ):
        return f"{len(row.features)} feature bytes / {len(row.labels)} label bytes for shape {row.shape}"
    x = np.frombuffer(row.features, dtype=dtype).reshape(row.shape)
    y = np.frombuffer(row.labels, dtype="<i8")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        return "non-finite features"
    if ((y < 0) | (y >= num_classes)).any():
        return "labels out of range"
    if batch_digest(ExampleBatch(row.batch_id, row.task_id, x, y)) != row.digest:
        return "digest does not match the content"
    return ""


def same_content(row: Row, sent: pb.ExampleBatch) -> bool:
    """Whether a stored batch holds exactly what the client sent."""
    x = serde.tensor_from_proto(sent.features, "features")
    y = np.asarray(sent.labels, dtype="<i8")
    return (
        row.features == np.ascontiguousarray(x).tobytes()
        and row.labels == y.tobytes()
        and row.task_id == sent.task_id
        and row.shape == tuple(sent.features.shape)
    )

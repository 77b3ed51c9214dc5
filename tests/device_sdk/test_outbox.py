"""The durable upload queue (SQLite) on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autohas_edge.device_sdk.outbox import Outbox


def _batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(3, 1, 8)).astype(np.float32), rng.integers(0, 4, 3)


def test_batches_keep_their_id_content_and_order_across_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "q.sqlite")
    ids = [box.put("t", "personalization", *_batch(i)) for i in range(3)]
    box.close()
    box = Outbox(tmp_path / "q.sqlite")
    pending = box.pending()
    assert [b.batch_id for b in pending] == ids
    x, y = _batch(1)
    np.testing.assert_array_equal(pending[1].features, x)
    np.testing.assert_array_equal(pending[1].labels, y)
    assert box.remove(ids[:2]) == 2 and [b.batch_id for b in box.pending()] == ids[2:]


def test_failures_are_counted_and_rejected_batches_are_parked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "q.sqlite")
    a, b = box.put("t", "p", *_batch(0)), box.put("t", "p", *_batch(1))
    box.record_failure([a], "offline")
    box.record_failure([b], "bad shape", reject=True)
    (left,) = box.pending()
    assert left.batch_id == a and left.attempts == 1
    assert box.count("rejected") == 1 and box.count() == 1


def test_purge_by_purpose_and_settings(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "q.sqlite")
    box.put("t", "personalization", *_batch(0))
    keep = box.put("t", "research", *_batch(1))
    assert box.purge("personalization") == 1 and [b.batch_id for b in box.pending()] == [keep]
    box.set("consent/research", True)
    assert box.get("consent/research") is True and box.get("missing", 5) == 5

"""One contract for every Store: the in-memory one and the durable SQLite one must behave the same."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from autohas_edge.server.domain import (
    Consent,
    Device,
    Job,
    JobAudit,
    JobSpec,
    JobState,
    ModelFile,
    ModelInfo,
    ModelSummary,
    StoredBatch,
    Task,
    UserCount,
)
from autohas_edge.server.store import Store, open_store

T0 = 1_700_000_000.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(request.param, tmp_path)
    yield s
    s.close()


def task(task_id: str = "t1", purpose: str = "p", apps: tuple[str, ...] = ("app",)) -> Task:
    return Task(task_id, apps, purpose, (1, 4), "float32", 3, ("a", "b", "c"), T0)


def batch(
    batch_id: str,
    user: str = "u1",
    device: str = "d1",
    task_id: str = "t1",
    n: int = 2,
    digest: str = "",
) -> StoredBatch:
    return StoredBatch(
        device,
        batch_id,
        task_id,
        "app",
        user,
        n,
        "float32",
        (n, 1, 4),
        b"\0" * 16 * n,
        b"\0" * 8 * n,
        digest or f"digest-{batch_id}",
        T0,
    )


def consent(user: str = "u1", purpose: str = "p", version: str = "v1", at: float = T0) -> Consent:
    return Consent("app", user, purpose, version, at)


def test_devices_round_trip(store: Store) -> None:
    device = Device("d1", "app", "u1", "phone", "hash", T0)
    store.add_device(device)
    assert store.get_device("d1") == device
    assert store.get_device("nope") is None


def test_tasks_are_unique_and_listed_oldest_first(store: Store) -> None:
    assert store.add_task(task("t2"))
    assert store.add_task(Task("t1", ("app",), "p", (4,), "uint8", 2, (), T0 - 1))
    assert not store.add_task(task("t2"))
    assert [t.task_id for t in store.list_tasks()] == ["t1", "t2"]
    assert store.get_task("t2") == task("t2")
    assert store.get_task("nope") is None


def test_grant_is_idempotent_per_version_and_a_new_version_supersedes(store: Store) -> None:
    first = store.grant_consent(consent(at=T0))
    assert first.active and store.grant_consent(consent(at=T0 + 5)) == first
    second = store.grant_consent(consent(version="v2", at=T0 + 10))
    assert second.consent_text_version == "v2" and second.active
    history = store.list_consents("app", "u1")
    assert [(c.consent_text_version, c.revoked_at) for c in history] == [
        ("v2", None),
        ("v1", T0 + 10),
    ]


def test_upload_needs_active_consent_for_the_purpose(store: Store) -> None:
    store.add_task(task())
    assert store.add_batch(batch("b1"), "p") == "no_consent"
    store.grant_consent(consent(purpose="other"))
    assert store.add_batch(batch("b1"), "p") == "no_consent"
    store.grant_consent(consent())
    assert store.add_batch(batch("b1"), "p") == "stored"
    assert store.count_examples("t1") == 2


def test_batch_ids_are_idempotent_per_device(store: Store) -> None:
    store.add_task(task())
    store.grant_consent(consent())
    assert store.add_batch(batch("b1"), "p") == "stored"
    assert store.add_batch(batch("b1"), "p") == "duplicate"
    assert store.add_batch(batch("b1", digest="other"), "p") == "conflict"
    assert store.add_batch(batch("b1", device="d2"), "p") == "stored"  # another device's b1
    assert store.count_examples("t1") == 4


def test_revoke_deletes_only_that_users_examples_for_that_purpose(store: Store) -> None:
    store.add_task(task("t1", "p"))
    store.add_task(task("t2", "q"))
    for user in ("u1", "u2"):
        for purpose in ("p", "q"):
            store.grant_consent(consent(user, purpose))
    store.add_batch(batch("b1", "u1", task_id="t1"), "p")
    store.add_batch(batch("b2", "u1", task_id="t2", n=3), "q")
    store.add_batch(batch("b3", "u2", device="d2", task_id="t1", n=5), "p")
    revoked, deleted = store.revoke_consent("app", "u1", "p", T0 + 1)
    assert (
        deleted == 2 and revoked is not None and revoked.revoked_at == T0 + 1 and not revoked.active
    )
    assert store.count_examples("t1") == 5 and store.count_examples("t1", "app", "u1") == 0
    assert store.count_examples("t2") == 3
    assert store.add_batch(batch("b4", "u1", task_id="t1"), "p") == "no_consent"
    again, deleted_again = store.revoke_consent("app", "u1", "p", T0 + 2)
    assert deleted_again == 0 and again == revoked
    assert store.revoke_consent("app", "nobody", "p", T0) == (None, 0)


def test_snapshot_holds_only_consenting_users_with_their_consent_version(store: Store) -> None:
    store.add_task(task())
    store.grant_consent(consent("u1", version="v1"))
    store.grant_consent(consent("u2", version="v7"))
    store.add_batch(batch("b1", "u1"), "p")
    store.add_batch(batch("b2", "u2", device="d2", n=3), "p")
    store.add_batch(batch("b3", "u1"), "p")
    store.revoke_consent("app", "u2", "p", T0 + 1)
    snap = store.snapshot("t1", "p")
    assert [b.batch_id for b in snap.batches] == ["b1", "b3"]
    assert snap.consent_versions == {("app", "u1"): "v1"}
    assert snap.batches[0].features == b"\0" * 32 and snap.batches[0].shape == (2, 1, 4)


def test_jobs_round_trip_and_filter_by_task(store: Store) -> None:
    job = Job("j1", JobSpec("t1", steps=5), JobState.QUEUED, T0)
    later = Job(
        "j2",
        JobSpec("t2"),
        JobState.SUCCEEDED,
        T0 + 1,
        result=ModelSummary("m", {"k": "3"}, {}, 10),
    )
    store.put_job(later)
    store.put_job(job)
    assert [j.job_id for j in store.list_jobs()] == ["j1", "j2"]
    assert store.list_jobs("t2") == [later]
    store.put_job(Job("j1", job.spec, JobState.RUNNING, T0, started_at=T0 + 2))
    assert store.get_job("j1").state is JobState.RUNNING  # type: ignore[union-attr]
    assert store.get_job("nope") is None


def test_audits_round_trip_once(store: Store) -> None:
    store.put_job(Job("j1", JobSpec("t1"), JobState.RUNNING, T0))
    audit = JobAudit(
        "j1", "t1", "p", T0, (UserCount("app", "u1", 4, "v1"), UserCount("app", "u2", 2, "v2"))
    )
    store.put_audit(audit)
    assert store.get_audit("j1") == audit and audit.total_examples == 6
    assert store.get_audit("j2") is None
    with pytest.raises(Exception):  # noqa: B017 (KeyError or sqlite3.IntegrityError)
        store.put_audit(audit)


def test_models_round_trip_newest_first(store: Store) -> None:
    files = (ModelFile("b.onnx", "h2", 20), ModelFile("a.json", "h1", 10))
    store.add_model(ModelInfo("m1", "t1", "j1", ("onnx",), T0), files)
    store.add_model(ModelInfo("m2", "t1", "j2", ("onnx", "tflite"), T0 + 1), ())
    store.add_model(ModelInfo("m3", "t2", "j3", (), T0 + 2), ())
    assert [m.model_id for m in store.list_models()] == ["m3", "m2", "m1"]
    assert [m.model_id for m in store.list_models("t1")] == ["m2", "m1"]
    info, got = store.get_model("m1")  # type: ignore[misc]
    assert info.formats == ("onnx",) and [f.path for f in got] == ["a.json", "b.onnx"]
    assert store.get_model("nope") is None


def test_concurrent_uploads_and_revocation_leave_no_orphans(store: Store) -> None:
    """Revocation racing uploads: afterwards the user has no examples and no later upload got in."""
    store.add_task(task())
    store.grant_consent(consent())
    results: list[str] = []

    def upload(worker: int) -> None:
        for i in range(30):
            results.append(store.add_batch(batch(f"b{worker}-{i}", device=f"d{worker}"), "p"))

    threads = [threading.Thread(target=upload, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    _, deleted = store.revoke_consent("app", "u1", "p", T0 + 1)
    for t in threads:
        t.join()
    stored = results.count("stored")
    assert results.count("stored") + results.count("no_consent") == 120
    assert store.count_examples("t1") == 0 and deleted == 2 * stored

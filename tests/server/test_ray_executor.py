"""Search jobs on a real two-node Ray cluster (`--executor ray`), through a real gRPC server.

One cluster on this machine for the whole module: a head node without CPUs (it schedules nothing, so
it can outlive the others) and two worker nodes of 1 CPU each, so each holds one job. The fast fake
engine runs the jobs; what is under test is where they run, what comes back, and what is left behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
from tests.fixtures.server_fixtures import (
    PURPOSE,
    ROOT,
    RunningServer,
    example_batch,
)
from tests.server.test_jobs import get, seed, start, wait_for, watch

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

pytestmark = pytest.mark.slow

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Head (0 CPU) + two 1-CPU nodes; the test process is its driver (the servers share it)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)  # tests.*
    head = {**NODE, "num_cpus": 0, "include_dashboard": False}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**head, "_system_config": FAST_FAILURE_DETECTION},
    )
    for _ in range(2):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, namespace="autohas")
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """The nodes' scratch root for one test (the nodes share this machine's disk)."""
    return tmp_path / "scratch"


@pytest.fixture
def ray_server(
    cluster: Cluster, scratch: Path, server_factory: Callable[..., RunningServer]
) -> Callable[..., RunningServer]:
    """Start servers with the Ray executor over the module's cluster."""

    def factory(**overrides: object) -> RunningServer:
        settings = {"executor": "ray", "max_running_jobs": 3, "ray_scratch_dir": str(scratch)}
        return server_factory(**{**settings, **overrides})

    return factory


def job_node(s: RunningServer, job_id: str) -> str:
    """The 8-digit node id prefix of a job's placement ("node 1a2b3c4d (ip)")."""
    placement = get(s, job_id).placement
    assert placement.startswith("node "), placement
    return placement.split()[1]


def result_json(s: RunningServer, job_id: str) -> dict:
    """The run's result.json, as it came back to the server's data dir."""
    return json.loads((s.handle.app.jobs.run_dir(job_id) / "result.json").read_text())


def leftovers_on_every_node(scratch: Path, needle: bytes) -> dict[str, list[str]]:
    """On each alive node: the files under the scratch root, and those holding `needle`."""

    @ray.remote(num_cpus=0)
    def look(root: str) -> list[str]:
        found = []
        for path in Path(root).rglob("*"):
            if path.is_file():
                found.append(f"{path}{' HOLDS THE ROWS' if needle in path.read_bytes() else ''}")
        return found

    return {
        node["NodeID"][:8]: ray.get(
            look.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(str(scratch))
        )
        for node in ray.nodes()
        if node["Alive"]
    }


def test_a_job_runs_on_a_node_and_its_results_come_back(
    ray_server: Callable[..., RunningServer], scratch: Path
) -> None:
    s = ray_server()
    seed(s)
    job = start(s, steps=8, seed=3)
    events = watch(s, job.job_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED and events[-1].stage == "done"
    steps = [e.step for e in events if e.stage == "search"]  # streamed back (maybe coalesced)
    assert steps and steps == sorted(steps) and steps[-1] <= 8
    worker_nodes = {n["NodeID"][:8] for n in ray.nodes() if n["Resources"].get("CPU")}
    assert job_node(s, job.job_id) in worker_nodes
    done = get(s, job.job_id)
    assert done.result.params == 1234 and done.finished_at.seconds > 0
    result = result_json(s, job.job_id)
    assert result["examples"] == 12 and result["pid"] != os.getpid()
    assert (s.handle.app.jobs.job_dir(job.job_id) / "worker.log").exists()  # synced back too
    audit = s.operator.GetJobAudit(pb.GetJobRequest(job_id=job.job_id), metadata=s.op_md)
    assert audit.total_examples == 12  # the server took the snapshot and audited it, as with local
    left = leftovers_on_every_node(scratch, b"\0never")
    assert worker_nodes <= set(left) and not any(left.values()), left  # the scratch copy is gone


def test_two_jobs_run_at_once_on_the_two_nodes_and_a_third_waits(
    ray_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.1")  # forwarded to the workers
    s = ray_server()
    seed(s)
    jobs = [start(s, steps=300).job_id for _ in range(3)]

    def running() -> list[str]:
        return [j for j in jobs if get(s, j).progress.step >= 2]

    wait_for(lambda: len(running()) == 2, timeout=60)  # one job a node: two run, one waits
    first, second = running()
    (third,) = set(jobs) - {first, second}
    assert job_node(s, first) != job_node(s, second)
    waiting = get(s, third)
    assert waiting.state == pb.JOB_STATE_RUNNING and waiting.placement == "waiting for 1 CPU on Ray"
    listed = s.operator.ListJobs(pb.ListJobsRequest(), metadata=s.op_md).jobs
    placements = {j.job_id: j.placement for j in listed}
    assert placements[third] == "waiting for 1 CPU on Ray"
    assert placements[first].startswith("node ") and placements[second].startswith("node ")
    for job_id in (third, first, second):
        s.operator.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=s.op_md)
    assert {watch(s, j)[-1].state for j in jobs} == {pb.JOB_STATE_CANCELLED}


def test_a_job_that_no_node_can_hold_fails_saying_why(
    ray_server: Callable[..., RunningServer],
) -> None:
    s = ray_server(ray_gpus_per_worker=1.0)
    seed(s)
    job = start(s, steps=4)
    final = watch(s, job.job_id)[-1]
    assert final.state == pb.JOB_STATE_FAILED
    error = get(s, job.job_id).error
    assert "no node of the Ray cluster has 1 CPU, 1 GPU" in error and "0 GPU" in error


def test_cancel_checkpoints_and_a_restarted_server_resumes_the_job(
    ray_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    s = ray_server()
    seed(s)
    cancelled, resumed = start(s, steps=400), start(s, steps=60)
    wait_for(lambda: get(s, cancelled.job_id).progress.step >= 3, timeout=60)
    s.operator.CancelJob(pb.CancelJobRequest(job_id=cancelled.job_id), metadata=s.op_md)
    final = watch(s, cancelled.job_id)[-1]
    assert final.state == pb.JOB_STATE_CANCELLED and final.step < 400
    checkpoint = s.handle.app.jobs.run_dir(cancelled.job_id) / "search.json"
    assert json.loads(checkpoint.read_text())["step"] >= final.step  # it came back to the server

    wait_for(lambda: get(s, resumed.job_id).progress.step >= 5, timeout=60)
    s.stop()  # stops the worker after a checkpoint; the job stays running, to resume at start
    seen = json.loads((s.handle.app.jobs.run_dir(resumed.job_id) / "search.json").read_text())
    again = ray_server(data_dir=s.data_dir, operator_token=s.operator_token)
    assert watch(again, resumed.job_id)[-1].state == pb.JOB_STATE_SUCCEEDED
    assert result_json(again, resumed.job_id)["resumed_from"] >= max(5, seen["step"])


def test_a_job_whose_node_dies_finishes_on_the_other(
    cluster: Cluster, ray_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.1")
    s = ray_server()
    seed(s)
    job = start(s, steps=50)
    wait_for(lambda: get(s, job.job_id).progress.step >= 5, timeout=60)
    lost = job_node(s, job.job_id)
    step_before = get(s, job.job_id).progress.step
    victim = next(n for n in cluster.worker_nodes if n.node_id.startswith(lost))
    cluster.remove_node(victim, allow_graceful=False)
    try:
        assert watch(s, job.job_id, timeout=120)[-1].state == pb.JOB_STATE_SUCCEEDED
        assert job_node(s, job.job_id) != lost
        assert result_json(s, job.job_id)["resumed_from"] >= step_before  # from its checkpoint
    finally:
        cluster.add_node(**NODE)  # the next tests get two nodes again
        cluster.wait_for_nodes()


def test_revoking_consent_mid_job_leaves_none_of_the_users_rows_on_any_node(
    ray_server: Callable[..., RunningServer], scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOHAS_FAKE_STEP_S", "0.05")
    s = ray_server()
    seed(s)  # alice: 12 examples of seed 0
    bob = s.register(user_id="bob")
    bob.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=bob.md
    )
    rows = example_batch("b2", n=9, seed=7)
    bob.stub.UploadExamples(iter([rows]), metadata=bob.md)
    needle = (
        np.frombuffer(rows.features.data, "<f4").reshape(9, -1)[4].tobytes()
    )  # one of bob's rows
    job = start(s, steps=60)
    wait_for(lambda: get(s, job.job_id).progress.step >= 3, timeout=60)
    running = leftovers_on_every_node(scratch, needle)
    assert any(
        "HOLDS THE ROWS" in f for files in running.values() for f in files
    )  # the test sees them
    bob.stub.RevokeConsent(pb.RevokeConsentRequest(purpose=PURPOSE), metadata=bob.md)
    assert watch(s, job.job_id)[-1].state == pb.JOB_STATE_SUCCEEDED
    assert result_json(s, job.job_id)["examples"] == 21  # it used the data consented at its start
    after = leftovers_on_every_node(scratch, needle)
    assert after and all(files == [] for files in after.values()), after
    with np.load(s.handle.app.jobs.job_dir(job.job_id) / "dataset.npz") as snapshot:
        assert len(snapshot["x"]) == 12 and "bob" not in snapshot["owner_user"].tolist()


def two_worker_server(
    ray_server: Callable[..., RunningServer], user: str, batch_seed: int
) -> RunningServer:
    """A server running real 2-worker searches, with one more user's 240 consented examples."""
    s = ray_server(engine="autohas_edge.server.engine", search_workers=2)
    seed(s)
    device = s.register(user_id=user)
    device.stub.GrantConsent(
        pb.GrantConsentRequest(purpose=PURPOSE, consent_text_version="v1"), metadata=device.md
    )
    batch = example_batch(f"b{batch_seed}", n=240, seed=batch_seed)
    device.stub.UploadExamples(iter([batch]), metadata=device.md)
    return s


def test_a_two_worker_real_search_runs_under_torchrun_on_one_node_with_two_cpus(
    cluster: Cluster, ray_server: Callable[..., RunningServer]
) -> None:
    big = cluster.add_node(**{**NODE, "num_cpus": 2})  # the only node with 2 CPUs
    cluster.wait_for_nodes()
    try:
        s = two_worker_server(ray_server, "carol", 3)
        job = start(s, steps=4, retrain_steps=4, seed=0)
        assert watch(s, job.job_id, timeout=240)[-1].state == pb.JOB_STATE_SUCCEEDED
        assert job_node(s, job.job_id) == big.node_id[:8]
        result = result_json(s, job.job_id)
        assert result["workers"]["world_size"] == 2 and result["workers"]["backend"] == "gloo"
        assert (s.handle.app.jobs.run_dir(job.job_id) / "model.pt").exists()  # came back
    finally:
        cluster.remove_node(big)


def test_a_two_worker_search_spans_the_two_one_cpu_nodes_as_one_group(
    cluster: Cluster, ray_server: Callable[..., RunningServer]
) -> None:
    s = two_worker_server(ray_server, "dave", 5)
    job = start(s, steps=4, retrain_steps=4, seed=0)
    assert watch(s, job.job_id, timeout=240)[-1].state == pb.JOB_STATE_SUCCEEDED
    placement = get(s, job.job_id).placement
    worker_nodes = [n.node_id[:8] for n in cluster.worker_nodes]
    assert placement.startswith("nodes ") and all(n in placement for n in worker_nodes), placement
    result = result_json(s, job.job_id)
    assert result["workers"]["world_size"] == 2 and result["workers"]["backend"] == "gloo"
    assert (s.handle.app.jobs.run_dir(job.job_id) / "model.pt").exists()  # rank 0's run came back
    assert (s.handle.app.jobs.job_dir(job.job_id) / "ranks" / "1").is_dir()  # rank 1's logs too


def test_a_two_worker_job_that_loses_its_second_workers_node_resumes_on_others(
    cluster: Cluster, ray_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    spare = cluster.add_node(**NODE)  # three 1-CPU nodes: two for the job, one to resume on
    cluster.wait_for_nodes()
    s = two_worker_server(ray_server, "erin", 6)
    job = start(s, steps=200, retrain_steps=4, seed=0)
    wait_for(lambda: get(s, job.job_id).progress.step >= 3, timeout=180)
    placement = get(s, job.job_id).placement  # "nodes <rank 0> (ip), <rank 1> (ip)"
    second = placement.split(", ")[1].split()[0]
    victim = next(n for n in cluster.worker_nodes if n.node_id.startswith(second))
    cluster.remove_node(victim, allow_graceful=False)
    try:
        final = watch(s, job.job_id, timeout=300)[-1]
        assert final.state == pb.JOB_STATE_SUCCEEDED, get(s, job.job_id).error
        assert second not in get(s, job.job_id).placement
        assert result_json(s, job.job_id)["workers"]["world_size"] == 2
        assert "search worker 1: The actor died because its node has died" in caplog.text
        assert "resuming it on other nodes" in caplog.text
    finally:
        if spare in cluster.worker_nodes and len(cluster.worker_nodes) > 2:
            cluster.remove_node(spare)  # the next tests find the module's two nodes

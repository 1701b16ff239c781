"""Real local Ray (embedded, no dashboard — the single-machine deployment): while a 2-worker
search runs, GET /v1/jobs/{id}/resources lists its job actor, Ray Train controller and both
ranks with their pids and measured usage; once it ended, /checkpoints lists what it wrote and
/resources the ranks its result recorded (issue 15)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ray_env  # noqa: F401  (first: the environment of the Ray processes)
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from tests.support.waiting import wait_status
from workers.executors import USAGE_PROBE, RayExecutor

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.flaky(reruns=1, reruns_delay=2),
]

SEARCH = {
    "space": tiny_space(input_size=16),
    "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4, "input_size": 16},
    "epochs": 6,
    "warmup_epochs": 1,
    "batch_size": 16,
    "checkpoint_every": 10,
    "num_workers": 2,
}


@pytest.fixture(scope="module")
def executor() -> Iterator[RayExecutor]:
    ex = RayExecutor(num_cpus=2, object_store_memory=150 * 1024**2)
    ex._ray()
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def server(executor: RayExecutor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from service.settings import Settings

    data: Path = tmp_path_factory.mktemp("ray-resources")

    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{data}/densenas.db",
            executor="ray",
            data_dir=data,
            public_url=url,
            poll_interval_s=0.2,
            heartbeat_timeout_s=120,
            ray_dashboard_url="http://127.0.0.1:8265",
        )

    with LiveServer(settings, executor) as live:
        yield live


def test_resources_while_running_and_checkpoints_after(server: LiveServer, executor) -> None:
    c = server.client(server.admin_token())
    job_id = c.post("/v1/jobs", json={"kind": "search", "spec": SEARCH}).json()["id"]
    wait_status(c, job_id, "running", timeout=120)

    seen: dict | None = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        body = c.get(f"/v1/jobs/{job_id}/resources").json()
        roles = {p["role"]: p for p in body["processes"]}
        ranks_measured = all(
            roles.get(f"rank {r}", {}).get("rss_bytes") for r in (0, 1)
        ) and roles.get("rank 0", {}).get("device")
        if {"job actor", "train controller"} <= set(roles) and ranks_measured:
            seen = body
            break
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running", body
        time.sleep(1)
    assert seen is not None, f"never saw the job actor, controller and both ranks: {body}"
    print(f"\n[resources] {seen}")
    assert seen["executor"] == "ray" and seen["source"] == "gcs-actor-table"
    assert seen["attempt"] == 1 and seen["ray_dashboard_url"] == "http://127.0.0.1:8265"
    procs = {p["role"]: p for p in seen["processes"]}
    pids = {p["pid"] for p in procs.values()}
    assert len(pids) == 4 and all(isinstance(p, int) and p > 0 for p in pids)
    assert procs["job actor"]["actor_class"] == "JobActor"
    assert procs["train controller"]["actor_class"] == "TrainController"
    for rank in (0, 1):
        p = procs[f"rank {rank}"]
        assert p["actor_class"] == "RayTrainWorker" and p["state"] == "ALIVE"
        assert p["node_ip"] == "127.0.0.1" and p["node_id"] and p["device"] == "cpu"
        assert p["rss_bytes"] > 50 * 1024**2 and p["cpu_percent"] is not None
        assert "control plane's host" in p["usage_source"]
        assert p["gpu_memory_bytes"] is None  # no NVIDIA driver here
    # the path a node other than the control plane's takes: a task pinned to the node
    ray = executor._ray()
    rank0 = procs["rank 0"]
    probed = executor._probe(ray, rank0["node_id"], [rank0["pid"]])
    assert probed[rank0["pid"]]["rss_bytes"] > 50 * 1024**2, probed
    assert USAGE_PROBE.format(tool="psutil")  # the label that path reports

    job = wait_status(c, job_id, {"succeeded", "failed"}, timeout=600)
    assert job["status"] == "succeeded", job["error"]
    ckpts = c.get(f"/v1/jobs/{job_id}/checkpoints").json()
    assert len(ckpts["checkpoints"]) >= 1, ckpts
    last = ckpts["checkpoints"][-1]
    assert last["attempt"] == 1 and last["global_step"] > 0 and last["size_bytes"] > 0
    assert last["uri"].startswith(server.settings.job_storage_path(job_id))
    after = c.get(f"/v1/jobs/{job_id}/resources").json()
    assert after["processes"] == [] and after["status"] == "succeeded"
    assert sorted(w["pid"] for w in after["workers"]) == sorted(
        procs[f"rank {r}"]["pid"] for r in (0, 1)
    )

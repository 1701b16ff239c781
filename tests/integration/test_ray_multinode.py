"""Retrain across two (simulated) nodes: ray.cluster_utils.Cluster with a CPU-less head and two
2-CPU worker nodes; num_nodes=2 × workers_per_node=1 must put one DDP worker on each, and
2 × 2 exactly two on each (per-bundle node selectors; SPREAD would not guarantee it)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support import ray_env  # noqa: F401  (first: the environment of the Ray processes)
from tests.support.fake_control_plane import FakeControlPlane
from workers.executors import RayExecutor
from workers.payload import JobPayload

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

TINY_ARCH = {
    "version": 1,
    "name": "tiny-derived",
    "space": "tiny",
    "family": "mbv2",
    "input_size": 16,
    "in_channels": 1,
    "num_classes": 4,
    "stem": {"c_out": 4, "stride": 1, "act": "relu6"},
    "blocks": [
        {
            "c_in": 4,
            "c_out": 8,
            "stride": 2,
            "align_op": "mb_k5_e3",
            "layers": ["mb_k3_e3"],
            "from_block": 0,
            "to_block": 1,
        },
        {
            "c_in": 8,
            "c_out": 12,
            "stride": 1,
            "align_op": "mb_k3_e3",
            "layers": [],
            "from_block": 1,
            "to_block": 3,
        },
    ],
    "tail": {"c_in": 12, "c_out": 16},
}
MB = 1024**2


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    t0 = time.monotonic()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 100 * MB, "include_dashboard": False},
    )
    nodes = [c.add_node(num_cpus=2, object_store_memory=80 * MB) for _ in range(2)]
    c.wait_for_nodes()
    print(f"\n[timing] 3-node cluster up in {time.monotonic() - t0:.1f}s")
    yield c, nodes
    c.shutdown()


@pytest.mark.parametrize("per_node", [1, 2])
def test_retrain_places_exactly_workers_per_node_on_each_node(cluster, tmp_path, per_node):
    c, nodes = cluster
    ex = RayExecutor(address=c.address)
    with FakeControlPlane() as plane:
        plane.add_job(200 + per_node, token="tok")
        # what the dispatcher sends: the stored spec without the service's row ids
        spec = {
            "dataset": {
                "name": "fashion-mnist",
                "limit_train": 256,
                "limit_val": 64,
                "num_classes": 4,
                "input_size": 16,
            },
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.05,
            "num_nodes": 2,
            "workers_per_node": per_node,
            "seed": 0,
        }
        p = JobPayload(
            job_id=200 + per_node,
            kind="retrain",
            attempt=1,
            spec=spec,
            api_url=plane.url,
            job_token="tok",
            storage_path=str(tmp_path),
            architecture=TINY_ARCH,
        )
        t0 = time.monotonic()
        ex.start(p)
        assert ex.alive(200 + per_node)
        done = plane.wait_complete(200 + per_node, 600)
        print(
            f"\n[timing] 2×{per_node} retrain completed after {time.monotonic() - t0:.1f}s "
            f"(loop {done['result']['metrics']['wall_seconds']:.1f}s)"
            if done["result"]
            else ""
        )
        epochs = plane.jobs[200 + per_node].of_type("epoch")
    try:
        assert done["outcome"] == "succeeded", done["error"]
        r = done["result"]
        m = r["metrics"]
        assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and m["loss"] > 0
        assert m["top1"] > 0.3  # 4 classes: better than chance after two short epochs
        assert m["world_size"] == 2 * per_node
        assert {w["rank"] for w in r["workers"]} == set(range(2 * per_node))
        per = Counter(w["node_id"] for w in r["workers"])
        assert per == {n.node_id: per_node for n in nodes}  # exactly per_node on each
        assert [e["epoch"] for e in epochs] == [0, 1]
        # nothing of the run stays reserved
        import ray

        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 4:
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.2)
    finally:
        ex.shutdown()

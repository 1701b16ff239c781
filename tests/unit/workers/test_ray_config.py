"""How payloads map onto Ray Train / Ray task configuration (no cluster needed)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from workers.executors import MAX_FAILURES, build_trainer, profile_options  # noqa: E402
from workers.payload import JobPayload  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def payload(kind, spec, **kw):
    return JobPayload(job_id=42, kind=kind, attempt=1, spec=spec, api_url="http://cp",
                      job_token="t", storage_path="/tmp/densenas-store", **kw)


def test_search_trainer():
    t = build_trainer(payload("search", {"num_workers": 2, "use_gpu": False}))
    s, r = t.scaling_config, t.run_config
    assert (s.num_workers, s.use_gpu, s.placement_strategy) == (2, False, "PACK")
    assert s.resources_per_worker == {"CPU": 1.0}
    assert r.name == "densenas-job-42" and r.storage_path == "/tmp/densenas-store"
    assert r.failure_config.max_failures == MAX_FAILURES == 2
    assert r.checkpoint_config.num_to_keep == 2
    assert t.train_loop_config["payload"]["job_id"] == 42


def test_gpu_search_trainer_asks_for_the_gpu_type():
    t = build_trainer(payload("search", {"num_workers": 4, "use_gpu": True, "gpu_type": "A100"}))
    s = t.scaling_config
    assert s.use_gpu and s.num_workers == 4 and s.accelerator_type == "A100"
    assert s.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}


@pytest.mark.parametrize("nodes,per_node,strategy", [(1, 2, "PACK"), (2, 1, "STRICT_SPREAD"),
                                                     (2, 2, "SPREAD")])
def test_retrain_trainer_spreads_over_nodes(nodes, per_node, strategy):
    t = build_trainer(payload("retrain", {"num_nodes": nodes, "workers_per_node": per_node,
                                          "gpus_per_worker": 0}, architecture={"blocks": []}))
    assert t.scaling_config.num_workers == nodes * per_node
    assert t.scaling_config.placement_strategy == strategy


def test_profile_task_is_pinned_to_the_device_class():
    assert profile_options(payload("profile", {"device": {"device": "cpu"}})) == {
        "num_cpus": 1, "max_retries": 1}
    gpu = profile_options(payload("profile", {"device": {"device": "cuda", "gpu_type": "H100"}}))
    assert gpu["num_gpus"] == 1 and gpu["accelerator_type"] == "H100"

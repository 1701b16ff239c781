"""How payloads map onto Ray Train / Ray task configuration (no cluster needed)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from workers.executors import build_trainer, profile_options
from workers.payload import JobPayload
from workers.placement import NODE_ID_LABEL, NamePlacementGroups

pytestmark = pytest.mark.timeout(120)


def payload(kind, spec, **kw):
    return JobPayload(
        job_id=42,
        kind=kind,
        attempt=1,
        spec=spec,
        api_url="http://cp",
        job_token="t",
        storage_path="/tmp/densenas-store",
        **kw,
    )


def test_search_trainer():
    t = build_trainer(payload("search", {"num_workers": 2, "use_gpu": False}))
    s, r = t.scaling_config, t.run_config
    assert (s.num_workers, s.use_gpu, s.placement_strategy) == (2, False, "PACK")
    assert s.resources_per_worker == {"CPU": 1.0}
    assert r.name == "densenas-job-42" and r.storage_path == "/tmp/densenas-store"
    # one retry budget: the service's attempts; Ray Train restarts nothing on its own
    f = r.failure_config
    assert (f.max_failures, f.controller_failure_limit, f.max_preemption_failures) == (0, 0, 0)
    [namer] = [c for c in r.callbacks if isinstance(c, NamePlacementGroups)]
    assert (namer.job_id, namer.attempt) == (42, 1)
    assert r.checkpoint_config.num_to_keep == 2
    assert t.train_loop_config["payload"]["job_id"] == 42


def test_gpu_search_trainer_takes_a_gpu_per_worker():
    # a search spec has no gpu_type (the API refuses one); only a profile names a device class
    t = build_trainer(payload("search", {"num_workers": 4, "use_gpu": True, "epochs": 2}))
    s = t.scaling_config
    assert s.use_gpu and s.num_workers == 4 and s.accelerator_type is None
    assert s.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}


def test_payload_splits_its_spec_into_the_core_part_and_the_workers_part():
    p = payload(
        "retrain",
        {"epochs": 3, "num_nodes": 2, "gpus_per_worker": 0.5},
        architecture={"blocks": []},
    )
    want = p.resources()
    assert (want.num_nodes, want.workers_per_node, want.gpus_per_worker) == (2, 1, 0.5)
    assert want.num_workers == 2 and want.checkpoint_every == 50
    assert p.core_spec().epochs == 3 and p.core_spec().batch_size == 128
    search = payload("search", {"checkpoint_every": 7, "seed": 4})
    assert search.resources().checkpoint_every == 7 and search.core_spec().seed == 4
    with pytest.raises(ValueError, match="epoch: unknown search field"):
        payload("search", {"epoch": 3}).core_spec()
    with pytest.raises(ValueError, match="num_workers: expected an integer"):
        payload("search", {"num_workers": True}).resources()


@pytest.mark.parametrize("nodes,per_node,strategy", [(1, 2, "PACK"), (2, 1, "STRICT_SPREAD")])
def test_retrain_trainer_spreads_over_nodes(nodes, per_node, strategy):
    t = build_trainer(
        payload(
            "retrain",
            {"num_nodes": nodes, "workers_per_node": per_node, "gpus_per_worker": 0},
            architecture={"blocks": []},
        )
    )
    assert t.scaling_config.num_workers == nodes * per_node
    assert t.scaling_config.placement_strategy == strategy
    assert t.scaling_config.label_selector is None


def test_retrain_with_several_workers_per_node_pins_bundles_to_nodes(monkeypatch):
    import ray
    import ray._private.state as state

    nodes = [
        {"NodeID": n, "Alive": True, "Resources": {"CPU": c}}
        for n, c in (("a", 4.0), ("b", 1.0), ("c", 2.0), ("d", 8.0))
    ]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    monkeypatch.setattr(
        state,
        "available_resources_per_node",
        lambda: {"a": {"CPU": 0.0}, "c": {"CPU": 2.0}, "d": {"CPU": 8.0}},
        raising=False,
    )
    t = build_trainer(
        payload(
            "retrain",
            {"num_nodes": 2, "workers_per_node": 2, "gpus_per_worker": 0},
            architecture={"blocks": []},
        )
    )
    s = t.scaling_config
    assert s.num_workers == 4 and s.placement_strategy == "PACK"
    # b is too small; a is full right now, so the free c and d are chosen
    assert [sel[NODE_ID_LABEL] for sel in s.label_selector] == ["c", "c", "d", "d"]


def test_profile_task_is_pinned_to_the_device_class():
    assert profile_options(payload("profile", {"device": {"device": "cpu"}})) == {
        "num_cpus": 1,
        "max_retries": 0,
    }
    gpu = profile_options(payload("profile", {"device": {"device": "cuda", "gpu_type": "H100"}}))
    assert gpu["num_gpus"] == 1 and gpu["accelerator_type"] == "H100"

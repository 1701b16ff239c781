"""A sweep end to end in one process: the control plane with the real ``InlineExecutor`` runs a
2-value grid over ``cost.target`` on the tiny space and synthetic data — trials started through
the sweep's token, each a search that stores its architecture — then cancel and retry."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from tests.support.waiting import wait_for, wait_status

pytestmark = [pytest.mark.integration]

DATASET = {"name": "synthetic", "limit_train": 32, "limit_val": 16, "num_classes": 4}


def sweep_spec(epochs: int = 1, targets=(1.0e4, 3.0e4)) -> dict:
    return {
        "search": {
            "space": tiny_space(),
            "epochs": epochs,
            "warmup_epochs": 0,
            "batch_size": 16,
            "dataset": DATASET,
            "cost": {"mode": "target", "target": targets[0]},
        },
        "grid": {"cost.target": list(targets)},
        "max_concurrent": 2,
    }


@pytest.fixture
def live(tmp_path):
    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{tmp_path / 'sweep.db'}",
            data_dir=tmp_path / "data",
            storage_uri=str(tmp_path / "runs"),
            executor="inline",
            public_url=url,
            poll_interval_s=0.1,
        )

    with LiveServer(settings) as server:
        yield server


def events_of(c, job_id: int) -> list[dict]:
    r = c.get(f"/v1/jobs/{job_id}/events", params={"format": "json", "limit": 1000})
    return r.json()["data"]


def test_a_sweep_runs_its_grid_and_stores_one_architecture_per_trial(live):
    c = live.client(live.admin_token())
    r = c.post("/v1/jobs", json={"kind": "sweep", "spec": sweep_spec(), "tags": ["family"]})
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    trials = c.get("/v1/jobs", params={"parent": sweep_id}).json()["data"]
    assert sorted(t["trial"] for t in trials) == [0, 1]
    assert all(t["kind"] == "search" and t["parent_id"] == sweep_id for t in trials)
    assert sorted(t["spec"]["cost"]["target"] for t in trials) == [1.0e4, 3.0e4]
    assert all(t["tags"] == ["family"] for t in trials)  # a tag finds the whole family
    assert len(c.get("/v1/jobs", params={"tag": "family"}).json()["data"]) == 3
    assert [j["id"] for j in c.get("/v1/jobs", params={"top_level": True}).json()["data"]] == [
        sweep_id
    ]

    sweep = wait_status(c, sweep_id, {"succeeded", "failed"}, timeout=600)
    assert sweep["status"] == "succeeded", sweep["error"]
    result = sweep["result"]
    assert [t["trial"] for t in result["trials"]] == [0, 1]
    assert [t["config"] for t in result["trials"]] == [
        {"cost.target": 1.0e4},
        {"cost.target": 3.0e4},
    ]
    arch_ids = [t["architecture_id"] for t in result["trials"]]
    assert all(arch_ids) and len(set(arch_ids)) == 2
    for t in result["trials"]:
        assert t["status"] == "succeeded" and t["mult_adds"] > 0
        arch = c.get(f"/v1/architectures/{t['architecture_id']}").json()
        assert arch["job_id"] == t["job_id"]
    assert set(result["pareto_front"]) <= {t["job_id"] for t in result["trials"]}
    assert result["pareto_front"]
    assert result["counts"] == {"succeeded": 2}

    listed = c.get(f"/v1/jobs/{sweep_id}/trials").json()
    assert [t["job_id"] for t in listed["data"]] == [t["job_id"] for t in result["trials"]]
    # one stream: each trial's moves appear in the sweep's events
    moves = [
        (e["data"]["trial"], e["data"]["status"])
        for e in events_of(c, sweep_id)
        if e["type"] == "trial"
    ]
    for i in (0, 1):
        assert [s for t, s in moves if t == i] == ["queued", "running", "succeeded"]
    # a trial is a search: its own curves
    assert any(e["type"] == "epoch" for e in events_of(c, result["trials"][0]["job_id"]))


def test_every_trial_is_validated_before_the_sweep_is_accepted(live):
    c = live.client(live.admin_token())
    spec = sweep_spec()
    spec["grid"] = {"epochs": [1, 0]}
    r = c.post("/v1/jobs", json={"kind": "sweep", "spec": spec})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == "spec.grid.epochs"
    assert '{"epochs": 0}' in r.json()["errors"][0]["msg"]
    spec["grid"] = {"cost.nope": [1]}
    r = c.post("/v1/jobs", json={"kind": "sweep", "spec": spec})
    assert r.status_code == 422 and "spec.grid" in r.json()["errors"][0]["loc"], r.text
    assert "'nope' is not a field of cost" in r.text
    assert c.get("/v1/jobs").json()["data"] == []  # nothing half-created


def test_cancel_of_a_running_sweep_stops_every_trial(live):
    c = live.client(live.admin_token())
    r = c.post("/v1/jobs", json={"kind": "sweep", "spec": sweep_spec(epochs=50)})
    sweep_id = r.json()["id"]

    def first_trial_running():
        ts = c.get("/v1/jobs", params={"parent": sweep_id}).json()["data"]
        return any(t["status"] == "running" and t["progress"] for t in ts)

    wait_for(first_trial_running, timeout=300, interval=0.2, what="a trial to run")
    assert c.post(f"/v1/jobs/{sweep_id}/cancel").status_code == 202
    sweep = wait_status(c, sweep_id, {"cancelled", "failed", "succeeded"}, timeout=120)
    assert sweep["status"] == "cancelled"
    trials = c.get("/v1/jobs", params={"parent": sweep_id}).json()["data"]
    assert {t["status"] for t in trials} == {"cancelled"}

    # a trial runs only within its sweep
    r = c.post(f"/v1/jobs/{trials[0]['id']}/retry")
    assert r.status_code == 409 and "sweep" in r.json()["detail"]
    # retrying the sweep re-runs its trials (shortened: cancel again at once)
    assert c.post(f"/v1/jobs/{sweep_id}/retry").status_code == 200
    trials = c.get("/v1/jobs", params={"parent": sweep_id}).json()["data"]
    c.post(f"/v1/jobs/{sweep_id}/cancel")
    wait_status(c, sweep_id, {"cancelled", "failed", "succeeded"}, timeout=120)


def test_a_failed_trial_does_not_fail_the_others(live, tmp_path):
    c = live.client(live.admin_token())
    spec = sweep_spec()
    missing = {"name": "imagefolder", "root": str(tmp_path / "no-such-folder")}
    spec["grid"] = {"dataset": [missing, {**DATASET}]}
    sweep_id = c.post("/v1/jobs", json={"kind": "sweep", "spec": spec}).json()["id"]
    sweep = wait_status(c, sweep_id, {"succeeded", "failed"}, timeout=600)
    assert sweep["status"] == "succeeded", sweep["error"]
    first, second = sweep["result"]["trials"]
    assert first["status"] == "failed" and "no-such-folder" in first["error"]
    assert second["status"] == "succeeded" and second["architecture_id"]
    assert sweep["result"]["counts"] == {"failed": 1, "succeeded": 1}

    spec["grid"] = {"dataset": [missing]}
    sweep_id = c.post("/v1/jobs", json={"kind": "sweep", "spec": spec}).json()["id"]
    sweep = wait_status(c, sweep_id, {"succeeded", "failed"}, timeout=600)
    assert sweep["status"] == "failed"
    assert sweep["error"].startswith("all 1 trials failed; trial 0: ")
    assert "no-such-folder" in sweep["error"]

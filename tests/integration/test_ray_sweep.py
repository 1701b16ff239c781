"""A sweep on the embedded default, as a user runs it: a real ``densenas serve`` (SQLite, its
own local Ray) runs a 2-value grid over ``cost.target`` as one Ray Tune job whose trials are
TorchTrainer searches; then a cancel mid-run leaves no trial running and no CPU reserved."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.serve import TERMINAL, Server, wait
from tests.support.tiny_specs import tiny_space

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.flaky(reruns=1, reruns_delay=2),
]

TARGETS = [6.0e4, 1.2e5]


def sweep(epochs: int) -> dict:
    return {
        "kind": "sweep",
        "tags": ["ray-sweep"],
        "spec": {
            "search": {
                "space": tiny_space(input_size=16),
                "dataset": {"name": "synthetic", "limit_train": 160, "num_classes": 4},
                "epochs": epochs,
                "warmup_epochs": 0,
                "batch_size": 16,
                "cost": {"mode": "target", "target": TARGETS[0]},
                "checkpoint_every": 5,
            },
            "grid": {"cost.target": TARGETS},
            "max_concurrent": 2,
        },
    }


def idle(c) -> dict | None:
    """GET /v1/cluster once nothing of the service holds anything: every CPU free, no
    placement group, no job actor."""
    state = c.get("/v1/cluster").json()
    free = state["available"].get("CPU", 0) >= state["total"].get("CPU", 0) - 1e-6
    return state if free and not state["placement_groups"] and not state["job_actors"] else None


@pytest.fixture
def server(tmp_path: Path):
    s = Server(tmp_path, f"sqlite:///{tmp_path / 'sweep.db'}", executor="ray")
    s.start()
    yield s
    s.stop()


def test_sweep_over_cost_target_succeeds_on_the_embedded_default(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/jobs", json=sweep(epochs=2))
        assert r.status_code == 201, r.text
        sweep_id = r.json()["id"]
        t0 = time.monotonic()
        job = wait(
            lambda: (j := c.get(f"/v1/jobs/{sweep_id}").json())["status"] in TERMINAL and j,
            600,
            "the sweep to finish",
        )
        print(f"\n[timing] sweep of 2 trials finished in {time.monotonic() - t0:.1f}s")
        assert job["status"] == "succeeded", job["error"]
        trials = job["result"]["trials"]
        assert [t["config"]["cost.target"] for t in trials] == TARGETS
        assert all(t["status"] == "succeeded" for t in trials), trials
        archs = {t["architecture_id"] for t in trials}
        assert len(archs) == 2 and None not in archs
        for t in trials:
            trial = c.get(f"/v1/jobs/{t['job_id']}").json()
            assert trial["parent_id"] == sweep_id and trial["result"]["workers"]
            assert c.get(f"/v1/architectures/{t['architecture_id']}").status_code == 200
        # both trials ran at once (max_concurrent 2 on 2 CPUs): their runs overlap
        spans = []
        for t in trials:
            trial = c.get(f"/v1/jobs/{t['job_id']}").json()
            spans.append((trial["started_at"], trial["finished_at"]))
        assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
        assert wait(lambda: idle(c), 60, "the cluster to be idle")


def test_cancel_of_a_running_sweep_leaves_no_trial_running_and_no_cpu_reserved(
    server: Server,
) -> None:
    with server.client() as c:
        sweep_id = c.post("/v1/jobs", json=sweep(epochs=40)).json()["id"]

        def trials():
            return c.get("/v1/jobs", params={"parent": sweep_id}).json()["data"]

        wait(
            lambda: sum(1 for t in trials() if t["status"] == "running" and t["progress"]) == 2,
            300,
            "both trials to report progress",
        )
        t0 = time.monotonic()
        assert c.post(f"/v1/jobs/{sweep_id}/cancel").status_code == 202
        job = wait(
            lambda: (j := c.get(f"/v1/jobs/{sweep_id}").json())["status"] in TERMINAL and j,
            180,
            "the sweep to end",
        )
        ended = time.monotonic() - t0
        assert job["status"] == "cancelled", job
        assert {t["status"] for t in trials()} == {"cancelled"}
        state = wait(lambda: idle(c), 60, "the cluster to be idle")
        print(
            f"\n[timing] cancel: sweep cancelled {ended:.1f}s after the request, cluster idle "
            f"{time.monotonic() - t0:.1f}s after it ({state['available']})"
        )


def test_asha_stops_trailing_trials_early_and_the_sweep_still_succeeds(server: Server) -> None:
    """ASHA on val_acc (rung after 1 epoch): one trial learns (w_lr 0.1), two cannot (w_lr
    1e-6, val_acc at chance after epoch 1) and are stopped there — ended as cancelled with the
    reason, in the sweep's first attempt; the learning one runs all its epochs."""
    body = sweep(epochs=3)
    body["spec"].update(
        grid={"w_lr": [0.1, 1e-6, 1e-6]}, max_concurrent=1, scheduler="asha", grace_epochs=1
    )
    with server.client() as c:
        sweep_id = c.post("/v1/jobs", json=body).json()["id"]
        job = wait(
            lambda: (j := c.get(f"/v1/jobs/{sweep_id}").json())["status"] in TERMINAL and j,
            600,
            "the sweep to finish",
        )
        assert job["status"] == "succeeded" and job["attempt"] == 1, job
        first, *trailing = job["result"]["trials"]
        assert first["status"] == "succeeded"
        stopped = [t for t in trailing if t["status"] == "cancelled"]
        assert stopped, trailing
        for t in stopped:
            assert t["error"].startswith("stopped early by the ASHA scheduler after 1 epoch(s)")
            trial = c.get(f"/v1/jobs/{t['job_id']}").json()
            assert trial["progress"]["epoch"]["epoch"] == 0  # it finished one epoch, no more
        assert all(t["status"] == "succeeded" for t in trailing if t not in stopped)
        assert wait(lambda: idle(c), 60, "the cluster to be idle")

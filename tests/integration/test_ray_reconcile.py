"""Kill the control plane that holds a running Ray job; on restart the job is found by its
detached actor's name (``densenas-job-<id>``) and re-attached, not orphaned or re-run.

Production shape: an existing Ray cluster (``RAY_ADDRESS``) outlives the API process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.serve import SPEC, TERMINAL, Server, wait

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.ray,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture()
def ray_head(tmp_path: Path):
    # a loopback-only test cluster: token auth off for it and for its drivers (see ENVIRONMENT)
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    port = free_port()
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--object-store-memory=200000000",
            "--disable-usage-stats",
        ],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, timeout=120, capture_output=True)


def cluster_server(tmp_path: Path, ray_head: str) -> Server:
    """A `densenas serve` that is a driver of the test cluster (its job actors outlive it)."""
    server = Server(tmp_path, f"sqlite:///{tmp_path / 'ray.db'}", executor="ray")
    server.env["RAY_ADDRESS"] = ray_head
    server.env["RAY_AUTH_MODE"] = "disabled"
    server.env["DENSENAS_HEARTBEAT_TIMEOUT_S"] = "120"
    return server


def test_restarted_control_plane_reattaches_to_the_running_ray_job(
    tmp_path: Path, ray_head: str
) -> None:
    server = cluster_server(tmp_path, ray_head)
    spec = {**SPEC, "epochs": 4}
    server.start()
    try:
        with server.client() as c:
            jid = c.post("/v1/jobs", json={"kind": "search", "spec": spec}).json()["id"]
            wait(
                lambda: any(
                    e["type"] in ("step", "epoch")
                    for e in c.get(f"/v1/jobs/{jid}/events?format=json").json()["data"]
                ),
                300,
                "the Ray job to report progress",
            )
        server.kill()  # the driver/dispatcher dies; the detached job actor lives on
        server.start()
        with server.client() as c:
            job = wait(
                lambda: (j := c.get(f"/v1/jobs/{jid}").json())["status"] in TERMINAL and j,
                480,
                "the job to finish after the restart",
            )
            assert job["status"] == "succeeded", job
            assert job["attempt"] == 1, "the job was re-run instead of re-attached"
            events = c.get(f"/v1/jobs/{jid}/events?format=json").json()["data"]
            assert any(e["type"] == "reattached" for e in events), [e["type"] for e in events]
            seqs = [e["seq"] for e in events if e.get("seq") is not None]
            assert len(seqs) == len(set(seqs))
    finally:
        server.stop()


def test_restarted_control_plane_reattaches_to_a_running_sweep(
    tmp_path: Path, ray_head: str
) -> None:
    """The same for a sweep: its Tune driver (in the sweep's detached job actor) and both
    trials' trainers keep running while the control plane is down; after the restart the sweep
    and its trials are re-attached and finish in their first attempt."""
    server = cluster_server(tmp_path, ray_head)
    search = {**SPEC, "epochs": 3, "cost": {"mode": "target", "target": 5.0}}
    sweep = {"search": search, "grid": {"cost.target": [5.0, 20.0]}, "max_concurrent": 2}
    server.start()
    try:
        with server.client() as c:
            sid = c.post("/v1/jobs", json={"kind": "sweep", "spec": sweep}).json()["id"]

            def both_trials_stepping() -> bool:
                trials = c.get("/v1/jobs", params={"parent": sid}).json()["data"]
                return len(trials) == 2 and all(
                    t["status"] == "running" and t["progress"] for t in trials
                )

            wait(both_trials_stepping, 300, "both trials to report progress")
        server.kill()  # the dispatcher dies; the sweep's actor, Tune and the trainers live on
        server.start()
        with server.client() as c:
            job = wait(
                lambda: (j := c.get(f"/v1/jobs/{sid}").json())["status"] in TERMINAL and j,
                480,
                "the sweep to finish after the restart",
            )
            assert job["status"] == "succeeded", job
            assert job["attempt"] == 1, "the sweep was re-run instead of re-attached"
            assert [t["status"] for t in job["result"]["trials"]] == ["succeeded"] * 2
            for t in job["result"]["trials"]:
                assert t["attempt"] == 1, "a trial was re-run instead of re-attached"
                events = c.get(f"/v1/jobs/{t['job_id']}/events?format=json").json()["data"]
                seqs = [e["seq"] for e in events if e.get("seq") is not None]
                assert len(seqs) == len(set(seqs))
            events = c.get(f"/v1/jobs/{sid}/events?format=json").json()["data"]
            assert any(e["type"] == "reattached" for e in events), [e["type"] for e in events]
            assert any(e["type"] == "trial" and e["data"].get("epochs_done") for e in events)
    finally:
        server.stop()

"""The dispatcher end to end over real HTTP: a fake executor's worker threads speak the worker
protocol to a real uvicorn server with the job token the dispatcher minted."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from service import jobs
from service.dispatcher import Dispatcher
from service.models import Architecture, Job, JobEvent, LatencyTable, utcnow
from tests.support.fake_executor import FakeExecutor, fail, succeed, vanish
from tests.support.live import LiveServer
from tests.support.waiting import wait_for, wait_status


def serve(make_settings, executor, **settings_kw):
    return LiveServer(lambda url: make_settings(public_url=url, **settings_kw), executor)


def test_search_runs_to_success_and_stores_its_architecture(make_settings, tmp_path):
    ex = FakeExecutor(behaviour=succeed)
    with serve(make_settings, ex) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search", "spec": {"epochs": 1}}).json()
        done = wait_status(c, job["id"], {"succeeded", "failed"})
        assert ex.errors == []
        assert done["status"] == "succeeded", done
        assert done["started_at"] and done["finished_at"] and done["error"] is None
        assert done["progress"]["step"]["step"] == 2 and done["progress"]["epoch"]["val_acc"]
        [payload] = ex.started
        assert payload.job_id == job["id"] and payload.kind == "search"
        assert payload.api_url == live.url and payload.attempt == 1
        assert payload.storage_path == str(
            (tmp_path / "data" / "checkpoints" / f"job-{job['id']}").resolve()
        )
        # the stored spec less what only the control plane reads (the rows it names)
        cost = {k: v for k, v in job["spec"]["cost"].items() if k != "latency_table_id"}
        assert payload.spec == {**job["spec"], "cost": cost} and payload.architecture is None
        arch_id = done["result"]["architecture_id"]
        assert done["produced"]["architectures"] == [arch_id]
        arch = c.get(f"/v1/architectures/{arch_id}").json()
        assert arch["job_id"] == job["id"] and arch["name"] == f"found-by-{job['id']}"
        assert arch["mult_adds"] > 0 and arch["params"] > 0
        assert arch["measured_latency"] == {"test-cpu": 3.5} and arch["has_arch_params"]
        # the job token ended with its attempt
        r = live.client(payload.job_token).get(f"/v1/jobs/{job['id']}")
        assert r.status_code == 401

        # retrain it: the payload carries the architecture document; accuracy lands on it
        r = c.post(
            "/v1/jobs", json={"kind": "retrain", "spec": {"architecture_id": arch_id, "epochs": 1}}
        )
        assert r.status_code == 201, r.text
        retrain = wait_status(c, r.json()["id"], {"succeeded", "failed"})
        assert retrain["status"] == "succeeded" and retrain["architecture_id"] == arch_id
        assert ex.started[-1].architecture == arch["doc"]
        assert "architecture_id" not in ex.started[-1].spec  # resolved into the payload
        assert ex.started[-1].core_spec().epochs == 1
        arch = c.get(f"/v1/architectures/{arch_id}").json()
        assert (arch["accuracy_top1"], arch["accuracy_top5"]) == (71.5, 90.1)
        assert arch["retrains"] == [
            {"job_id": retrain["id"], "status": "succeeded", "top1": 71.5, "top5": 90.1}
        ]

        # profile: a latency table row
        r = c.post("/v1/jobs", json={"kind": "profile", "spec": {"repeats": 2}})
        prof = wait_status(c, r.json()["id"], {"succeeded", "failed"})
        table_id = prof["result"]["latency_table_id"]
        assert prof["produced"]["latency_tables"] == [table_id]
        table = c.get(f"/v1/latency-tables/{table_id}").json()
        assert table["device_name"] == "test-cpu" and table["entry_count"] > 10

        # a search naming that table gets its document in the payload
        r = c.post(
            "/v1/jobs",
            json={
                "kind": "search",
                "spec": {"cost": {"metric": "latency", "latency_table_id": table_id}},
            },
        )
        s2 = wait_status(c, r.json()["id"], {"succeeded", "failed"})
        assert s2["status"] == "succeeded"
        assert ex.started[-1].latency_table == table["doc"]
        a2 = c.get(f"/v1/architectures/{s2['result']['architecture_id']}").json()
        from densenas_core.arch import get_arch, op_sites

        sites = op_sites(get_arch(a2["doc"]), 32)
        assert a2["predicted_latency"][str(table_id)] == pytest.approx(0.5 * len(sites))


def test_worker_failure_fails_the_job_with_its_error(make_settings):
    ex = FakeExecutor(behaviour=fail)
    with serve(make_settings, ex, max_attempts=1) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        done = wait_status(c, job["id"], {"succeeded", "failed"})
        assert done["status"] == "failed"
        assert done["error"] == "RuntimeError: CUDA out of memory (simulated)"
        assert len(ex.started) == 1


def test_failures_are_retried_until_max_attempts(make_settings):
    ex = FakeExecutor(behaviour=fail)
    with serve(make_settings, ex, max_attempts=3, retry_backoff_s=0) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        done = wait_status(c, job["id"], "failed")
        assert done["attempt"] == 3 and [p.attempt for p in ex.started] == [1, 2, 3]
        assert len({p.job_token for p in ex.started}) == 3  # a fresh token per attempt


def test_executor_start_error_is_retried_then_fails_the_job(make_settings):
    ex = FakeExecutor(start_error=RuntimeError("ray cluster unreachable at head:6379"))
    with serve(make_settings, ex, max_attempts=2, retry_backoff_s=0) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        done = wait_status(c, job["id"], {"failed"})
        assert done["attempt"] == 2 and [e["attempt"] for e in done["attempt_errors"]] == [1, 2]
        assert done["error"] == (
            "executor failed to start the job: RuntimeError: ray cluster unreachable at head:6379"
        )


def test_stale_heartbeat_is_retried_then_failed_after_max_attempts(make_settings):
    ex = FakeExecutor(behaviour=vanish, alive_answer=False)
    with serve(
        make_settings, ex, heartbeat_timeout_s=0.3, max_attempts=2, retry_backoff_s=0
    ) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        done = wait_status(c, job["id"], "failed", timeout=30)
        assert done["attempt"] == 2 and len(ex.started) == 2
        assert done["error"].startswith("worker lost (heartbeat stale since ")
        with live.app.state.session_factory() as s:
            steps = [
                (e.data["from"], e.data["to"])
                for e in s.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job["id"], JobEvent.type == "status")
                    .order_by(JobEvent.id)
                )
            ]
        assert steps == [
            (None, "queued"),
            ("queued", "running"),
            ("running", "queued"),
            ("queued", "running"),
            ("running", "failed"),
        ]


def test_alive_worker_with_stale_heartbeat_is_kept(make_settings):
    ex = FakeExecutor(behaviour=vanish, alive_answer=True)
    with serve(make_settings, ex, heartbeat_timeout_s=0.2) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        wait_status(c, job["id"], "running")
        time.sleep(1.0)  # several reaper ticks past the timeout
        again = c.get(f"/v1/jobs/{job['id']}").json()
        assert again["status"] == "running" and again["attempt"] == 1
        # a cancel the worker ignores: once stale, the executor is told to stop it
        c.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(lambda: job["id"] in ex.cancelled, 10, what="executor.cancel")


def test_restart_reconciles_running_jobs(make_settings, db_url):
    """A control plane that died with jobs running: on start, live workers are re-attached and
    lost ones retried (or failed), without waiting for the heartbeat timeout."""
    first = FakeExecutor(behaviour=vanish)
    with serve(make_settings, first) as live:
        c = live.client(live.admin_token())
        kept = c.post("/v1/jobs", json={"kind": "search"}).json()["id"]
        lost = c.post("/v1/jobs", json={"kind": "search"}).json()["id"]
        last = c.post("/v1/jobs", json={"kind": "search", "max_attempts": 1}).json()["id"]
        for jid in (kept, lost, last):
            wait_status(c, jid, "running")
        live.dispatcher.stop()  # the process "dies": its jobs stay running in the database

    second = FakeExecutor(behaviour=vanish, alive_answer=lambda jid: jid == kept)
    with serve(make_settings, second, heartbeat_timeout_s=3600, retry_backoff_s=3600) as live:
        c = live.client(live.admin_token())
        wait_for(
            lambda: c.get(f"/v1/jobs/{last}").json()["status"] == "failed", 15, what="reconcile"
        )
        assert c.get(f"/v1/jobs/{kept}").json()["status"] == "running"
        lost_job = c.get(f"/v1/jobs/{lost}").json()
        assert lost_job["status"] == "queued" and lost_job["attempt"] == 2
        assert "control plane restarted" in lost_job["error"]
        assert "worker lost" in c.get(f"/v1/jobs/{last}").json()["error"]
        events = c.get(f"/v1/jobs/{kept}/events?format=json").json()["data"]
        assert any(e["type"] == "reattached" for e in events)


def test_tick_is_deterministic_without_the_thread(make_settings, session_factory, client, user):
    """Dispatcher.tick() claims, launches and reaps in one call (no HTTP needed here)."""
    ex = FakeExecutor(behaviour=vanish)
    settings = make_settings(heartbeat_timeout_s=5, max_attempts=1, max_running_jobs=2)
    d = Dispatcher(session_factory, ex, settings, reconcile_on_start=False)
    ids = [
        client.post("/v1/jobs", headers=user, json={"kind": "search", "max_attempts": 1}).json()[
            "id"
        ]
        for _ in range(3)
    ]
    report = d.tick()
    assert report.started == ids[:2]  # capacity 2
    assert d.tick().started == []
    later = utcnow() + timedelta(seconds=10)
    d.clock = lambda: later
    report = d.tick()
    assert report.lost == ids[:2] and report.started == [ids[2]]
    with session_factory() as s:
        statuses = [s.get(Job, i).status for i in ids]
        assert statuses == ["failed", "failed", "running"]
        assert s.scalar(select(Architecture)) is None and s.scalar(select(LatencyTable)) is None
        assert jobs.stale_running(s, later + timedelta(seconds=10))[0].id == ids[2]

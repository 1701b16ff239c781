"""The sweep worker's trial protocol against a real control plane (no executor: the test
claims the sweep like the dispatcher and runs ``workers.sweep`` itself)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from workers.payload import JobPayload
from workers.reporter import HttpReporter
from workers.sweep import TrialOutcome, run_sweep, run_trial

pytestmark = [pytest.mark.integration]


@pytest.fixture
def live(tmp_path):
    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{tmp_path / 'w.db'}",
            data_dir=tmp_path / "data",
            executor="none",
            public_url=url,
        )

    with LiveServer(settings) as server:
        yield server


def claimed_sweep(live, grid) -> JobPayload:
    """Create a sweep and claim it as the dispatcher does → its launch payload."""
    from service.db import make_engine, make_session_factory
    from service.dispatcher import build_payload
    from service.jobs import claim

    c = live.client(live.admin_token())
    search = {"space": tiny_space(), "dataset": {"name": "synthetic"}, "epochs": 1}
    r = c.post("/v1/jobs", json={"kind": "sweep", "spec": {"search": search, "grid": grid}})
    assert r.status_code == 201, r.text
    engine = make_engine(live.settings.database_url)
    try:
        with make_session_factory(engine)() as s:
            [(job, token)] = claim(s, "test-dispatcher", 10)
            payload = build_payload(s, job, token, live.settings)
            s.commit()
            return payload
    finally:
        engine.dispose()


def complete(child: JobPayload, outcome: str) -> None:
    reporter = HttpReporter(
        child.api_url, child.job_id, child.job_token, flush_interval_s=0, heartbeat_interval_s=0
    )
    try:
        result = {
            "architecture": None,
            "arch_params": None,
            "metrics": {"val_acc": 0.5},
        }
        reporter.complete(outcome, result=result)
    finally:
        reporter.close()


def test_a_trainer_that_fails_after_its_trial_completed_does_not_fail_the_trial(live):
    sweep = claimed_sweep(live, {"seed": [0, 1]})

    def completes_then_raises(child: JobPayload):
        complete(child, "cancelled")  # the trial's own word came first
        raise RuntimeError("WorkerHealthCheckFailedError: placement group removed")

    out = run_trial(sweep, 0, completes_then_raises)
    assert out.outcome == "cancelled"  # what the trial itself reported, not the shutdown error

    def raises(child: JobPayload):
        raise RuntimeError("boom at setup")

    out = run_trial(sweep, 1, raises)
    assert out == TrialOutcome(1, "failed", error="RuntimeError: boom at setup")
    c = live.client(live.admin_token())
    trials = c.get(f"/v1/jobs/{sweep.job_id}/trials").json()["data"]
    assert [t["status"] for t in trials] == ["cancelled", "failed"]
    assert "boom at setup" in trials[1]["error"]


def test_starting_a_trial_twice_or_after_a_cancel_is_refused(live):
    sweep = claimed_sweep(live, {"seed": [0, 1]})
    started = []

    def remember(child: JobPayload):
        started.append(child.job_id)
        complete(child, "cancelled")
        return {"final": True, "outcome": "cancelled", "posted": True}

    assert run_trial(sweep, 0, remember).outcome == "cancelled"
    again = run_trial(sweep, 0, remember)  # not queued any more: 409
    assert again.outcome == "cancelled" and "409" in (again.error or "")
    c = live.client(live.admin_token())
    assert c.post(f"/v1/jobs/{sweep.job_id}/cancel").status_code == 202
    refused = run_trial(sweep, 1, remember)
    assert refused.outcome == "cancelled" and "cancelling" in (refused.error or "")
    assert len(started) == 1

    final = run_sweep(sweep, lambda payload, indices: [])
    assert final["outcome"] == "cancelled"
    job = c.get(f"/v1/jobs/{sweep.job_id}").json()
    assert job["status"] == "cancelled"
    statuses = [t["status"] for t in c.get(f"/v1/jobs/{sweep.job_id}/trials").json()["data"]]
    assert statuses == ["cancelled", "cancelled"]  # the unstarted one cancelled with the sweep

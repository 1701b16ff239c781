"""The job state machine through the API and the worker protocol: cancel, retry, complete,
illegal transitions (409 with the current state), claim order, event dedupe and progress."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from service import jobs
from service.auth import Principal
from service.errors import Conflict
from service.models import Job, JobEvent, utcnow
from service.retry import RetryPolicy
from service.schemas import CompleteIn
from tests.support.docs import small_arch_doc


def submit(client, headers, **kw):
    r = client.post("/v1/jobs", headers=headers, json={"kind": "search", **kw})
    assert r.status_code == 201, r.text
    return r.json()


def status_events(session_factory, job_id):
    with session_factory() as s:
        return [
            (e.data["from"], e.data["to"])
            for e in s.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.type == "status")
                .order_by(JobEvent.id)
            )
        ]


def test_cancel_queued_is_immediate(client, user, session_factory):
    job = submit(client, user)
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=user)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert status_events(session_factory, job["id"]) == [(None, "queued"), ("queued", "cancelled")]
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=user)
    assert r.status_code == 409 and r.json()["current_state"] == "cancelled"


def test_cancel_running_asks_the_worker_which_stops(client, user, claim, session_factory):
    job = submit(client, user)
    [(jid, worker)] = claim()
    r = client.post(f"/v1/jobs/{jid}/cancel", headers=user)
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    # repeated cancel of a running job is harmless
    assert client.post(f"/v1/jobs/{jid}/cancel", headers=user).status_code == 202
    r = client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={"events": [{"seq": 1, "type": "step", "data": {"step": 1}}]},
    )
    assert r.json() == {"accepted": 1, "duplicates": 0, "cancel_requested": True}
    hb = client.post(f"/v1/jobs/{jid}/heartbeat", headers=worker).json()
    assert hb == {"cancel_requested": True, "status": "running"}
    r = client.post(
        f"/v1/jobs/{jid}/complete", headers=worker, json={"outcome": "cancelled", "error": None}
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert status_events(session_factory, job["id"])[-1] == ("running", "cancelled")
    with session_factory() as s:
        types = [e.type for e in s.scalars(select(JobEvent).where(JobEvent.job_id == jid))]
    assert "cancel_requested" in types


def test_a_failure_after_a_cancel_request_is_a_cancel(client, user, claim):
    submit(client, user, max_attempts=3)
    [(jid, worker)] = claim()
    client.post(f"/v1/jobs/{jid}/cancel", headers=user)
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "failed", "error": "Stopped: interrupted"},
    )
    assert r.json()["status"] == "cancelled" and r.json()["attempt"] == 1
    assert r.json()["error"] == "Stopped: interrupted"


def test_retry_failed_and_cancelled_only(client, user, claim):
    job = submit(client, user, max_attempts=1)
    [(jid, worker)] = claim()
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "failed", "error": "Traceback: boom"},
    )
    assert r.json()["status"] == "failed" and r.json()["error"] == "Traceback: boom"
    r = client.post(f"/v1/jobs/{jid}/retry", headers=user)
    assert r.status_code == 200
    again = r.json()
    assert again["status"] == "queued" and again["attempt"] == 2
    assert again["max_attempts"] >= 2 and again["error"] is None
    # the old attempt's worker token is dead: a zombie cannot touch the new attempt
    assert client.post(f"/v1/jobs/{jid}/heartbeat", headers=worker).status_code == 401
    r = client.post(f"/v1/jobs/{jid}/retry", headers=user)
    assert r.status_code == 409 and r.json()["current_state"] == "queued"
    cancelled = submit(client, user)
    client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=user)
    assert (
        client.post(f"/v1/jobs/{cancelled['id']}/retry", headers=user).json()["status"] == "queued"
    )
    assert job["id"] == jid


def test_succeeded_job_cannot_be_retried_cancelled_or_completed_again(client, user, claim, rows):
    submit(client, user)
    [(jid, worker)] = claim()
    result = {
        "architecture": small_arch_doc(),
        "arch_params": {"alpha": [], "beta": []},
        "metrics": {"val_acc": 0.7},
    }
    r = client.post(
        f"/v1/jobs/{jid}/complete", headers=worker, json={"outcome": "succeeded", "result": result}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "succeeded"
    assert done["result"]["architecture_id"] == done["produced"]["architectures"][0]
    n_arch, n_events = rows("architectures"), rows("job_events")
    for path, body in ((f"/v1/jobs/{jid}/retry", None), (f"/v1/jobs/{jid}/cancel", None)):
        r = client.post(path, headers=user, json=body)
        assert r.status_code == 409 and r.json()["current_state"] == "succeeded", path
    # the attempt is over, and its worker token with it
    for outcome in ("succeeded", "failed", "cancelled"):
        r = client.post(
            f"/v1/jobs/{jid}/complete",
            headers=worker,
            json={"outcome": outcome, "result": result, "error": "late"},
        )
        assert r.status_code == 401, r.text
    r = client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={"events": [{"seq": 99, "type": "log", "data": {}}]},
    )
    assert r.status_code == 401
    assert (rows("architectures"), rows("job_events")) == (n_arch, n_events)
    assert client.get(f"/v1/jobs/{jid}", headers=user).json()["result"] == done["result"]


def test_invalid_result_is_422_and_leaves_the_job_running(client, user, claim, rows):
    submit(client, user)
    [(jid, worker)] = claim()
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "succeeded", "result": {"metrics": {}}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "result.architecture"
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "succeeded", "result": {"architecture": {"version": 1}}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "result.architecture"
    assert rows("architectures") == 0
    assert client.get(f"/v1/jobs/{jid}", headers=user).json()["status"] == "running"


def test_failed_attempt_is_retried_with_backoff_then_fails(
    client, user, claim, session_factory, make_settings
):
    job = submit(client, user, max_attempts=2)
    [(jid, worker)] = claim()
    policy = RetryPolicy(base_s=30, factor=2, max_s=600)
    before = utcnow()
    with session_factory() as s:
        j = jobs.complete(s, jid, CompleteIn(outcome="failed", error="OOM"), policy)
        assert j.status == "queued" and j.attempt == 2
        assert j.scheduled_at >= before + timedelta(seconds=29)
        assert j.error == "attempt 1: OOM"
    assert claim() == []  # not runnable before its backoff is over
    with session_factory() as s:
        [(j, token)] = jobs.claim(s, "later", 1, now=utcnow() + timedelta(seconds=31))
        assert j.id == jid and j.attempt == 2
        j = jobs.complete(s, jid, CompleteIn(outcome="failed", error="OOM again"), policy)
        assert j.status == "failed" and j.error == "OOM again"
    assert status_events(session_factory, job["id"]) == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "queued"),
        ("queued", "running"),
        ("running", "failed"),
    ]


def test_claim_order_is_priority_then_fifo_and_respects_schedule(
    client, user, claim, session_factory
):
    a = submit(client, user)["id"]
    b = submit(client, user, priority=5)["id"]
    c = submit(client, user)["id"]
    d = submit(client, user, priority=5)["id"]
    later = submit(client, user, priority=100)["id"]
    with session_factory() as s:
        s.get(Job, later).scheduled_at = utcnow() + timedelta(hours=1)
        s.commit()
    claimed = [claim(1)[0][0] for _ in range(4)]  # one at a time: the claim picks the order
    assert claimed == [b, d, a, c]
    assert claim(10) == []


def test_duplicate_seq_is_ignored_and_progress_mirrors_latest(client, user, claim, session_factory):
    submit(client, user)
    [(jid, worker)] = claim()

    def post(events):
        r = client.post(f"/v1/jobs/{jid}/events", headers=worker, json={"events": events})
        assert r.status_code == 200, r.text
        return r.json()

    def step(i):
        return {"seq": i, "type": "step", "data": {"step": i, "loss": 1.0 / (i + 1)}}

    assert post([step(1), step(2)]) == {"accepted": 2, "duplicates": 0, "cancel_requested": False}
    # a resumed attempt re-sends step 2 (and a batch may repeat a seq)
    assert post([step(2), step(3), step(3)])["accepted"] == 1
    assert (
        post(
            [
                {"seq": 4, "type": "epoch", "data": {"epoch": 0, "val_acc": 0.4}},
                {"type": "log", "data": {"message": "no seq"}},
            ]
        )["accepted"]
        == 2
    )
    with session_factory() as s:
        seqs = [
            e.seq
            for e in s.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == jid, JobEvent.seq.is_not(None))
                .order_by(JobEvent.id)
            )
        ]
    assert seqs == [1, 2, 3, 4]
    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert job["progress"]["step"] == {"step": 3, "loss": 0.25}
    assert job["progress"]["epoch"] == {"epoch": 0, "val_acc": 0.4}
    events = client.get(f"/v1/jobs/{jid}/events?format=json&limit=1000", headers=user).json()
    assert [e["seq"] for e in events["data"] if e["seq"] is not None] == [1, 2, 3, 4]
    assert events["next_after"] == events["data"][-1]["id"]


def test_events_and_heartbeat_refresh_the_heartbeat(client, user, claim, session_factory):
    submit(client, user)
    [(jid, worker)] = claim()
    old = utcnow() - timedelta(minutes=10)
    with session_factory() as s:
        s.get(Job, jid).heartbeat_at = old
        s.commit()
    client.post(f"/v1/jobs/{jid}/heartbeat", headers=worker)
    with session_factory() as s:
        beat = s.get(Job, jid).heartbeat_at
    assert beat > old + timedelta(minutes=9)


def test_worker_protocol_validation(client, user, claim):
    submit(client, user)
    [(jid, worker)] = claim()
    for body in (
        {"events": [{"seq": -1, "type": "step"}]},
        {"events": [{"seq": 1}]},
        {"events": "nope"},
        {"outcome": "exploded"},
    ):
        path = "complete" if "outcome" in body else "events"
        r = client.post(f"/v1/jobs/{jid}/{path}", headers=worker, json=body)
        assert r.status_code == 422, (body, r.text)


def test_concurrent_claimers_on_sqlite_claim_each_job_once(client, user, db_url):
    from sqlalchemy import insert

    from service.db import make_engine, make_session_factory

    now = utcnow()
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with factory() as s:
        s.execute(
            insert(Job),
            [
                dict(
                    kind="search",
                    status="queued",
                    project="vision",
                    priority=0,
                    spec={},
                    attempt=1,
                    max_attempts=1,
                    scheduled_at=now,
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                )
                for _ in range(200)
            ],
        )
        s.commit()
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        eng = make_engine(db_url)
        f = make_session_factory(eng)
        try:
            while True:
                with f() as s:
                    got = jobs.claim(s, f"d{i}", 7)
                if not got:
                    return
                claimed[i] += [j.id for j, _ in got]
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    engine.dispose()
    assert not errors, errors
    every = [j for part in claimed for j in part]
    assert len(every) == 200 and len(set(every)) == 200


def test_domain_conflict_carries_current_state(client, user, session_factory):
    job = submit(client, user)
    p = Principal(0, "t", "vision", False)
    with session_factory() as s:
        jobs.cancel(s, p, job["id"])
        assert jobs.retry(s, p, job["id"]).status == "queued"
        with pytest.raises(Conflict) as e:
            jobs.retry(s, p, job["id"])
    assert e.value.current_state == "queued"
    assert e.value.status == 409


def test_the_transitions_table_names_every_status_and_refuses_other_moves():
    from service.jobs.states import RETRYABLE, TERMINAL, TRANSITIONS, JobStatus, transition

    assert set(TRANSITIONS) == set(JobStatus)
    assert all(TRANSITIONS[s] <= {JobStatus.QUEUED} for s in TERMINAL)  # only a retry leaves
    assert RETRYABLE == {"failed", "cancelled"}
    assert transition("queued", "running") == "running"
    with pytest.raises(ValueError, match="succeeded → queued"):
        transition("succeeded", "queued")

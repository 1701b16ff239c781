"""Every failed attempt is explained (its error and traceback tail on the job, in an ``error``
event and in the retry's status event), and an attempt's worker token ends with the attempt
and may only post worker event types."""

from __future__ import annotations

import pytest

from service import jobs
from service.retry import RetryPolicy

TAIL = (
    "\n".join(f'  File "train.py", line {i}, in step' for i in range(80))
    + "\nRuntimeError: CUDA out of memory"
)


def submit(client, headers, **kw):
    r = client.post("/v1/jobs", headers=headers, json={"kind": "search", **kw})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def fail(client, jid, worker, error, tail=None):
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "failed", "error": error, "traceback_tail": tail},
    )
    assert r.status_code == 200, r.text
    return r.json()


def events(client, jid, headers, type_):
    r = client.get(f"/v1/jobs/{jid}/events", headers=headers, params={"format": "json"})
    assert r.status_code == 200, r.text
    return [e["data"] for e in r.json()["data"] if e["type"] == type_]


def test_each_failed_attempt_keeps_its_error_and_traceback_tail(client, user, claim):
    jid = submit(client, user, max_attempts=2)
    [(_, worker)] = claim()
    fail(client, jid, worker, "RuntimeError: CUDA out of memory", TAIL)
    [(_, worker)] = claim()
    fail(client, jid, worker, "ValueError: bad batch")

    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert job["status"] == "failed" and job["error"] == "ValueError: bad batch"
    first, second = job["attempt_errors"]
    assert (first["attempt"], first["error"]) == (1, "RuntimeError: CUDA out of memory")
    lines = first["traceback_tail"].splitlines()
    assert len(lines) == 50 and lines[-1] == "RuntimeError: CUDA out of memory"
    assert (second["attempt"], second["error"], second["traceback_tail"]) == (
        2,
        "ValueError: bad batch",
        None,
    )

    errors = events(client, jid, user, "error")
    assert [(e["attempt"], e["error"]) for e in errors] == [
        (1, "RuntimeError: CUDA out of memory"),
        (2, "ValueError: bad batch"),
    ]
    assert errors[0]["traceback_tail"] == first["traceback_tail"]
    retry, failed = [e for e in events(client, jid, user, "status") if e["from"] == "running"]
    assert (retry["to"], retry["reason"], retry["failed_attempt"], retry["error"]) == (
        "queued",
        "retrying",
        1,
        "RuntimeError: CUDA out of memory",
    )
    assert (failed["to"], failed["failed_attempt"], failed["error"]) == (
        "failed",
        2,
        "ValueError: bad batch",
    )


def test_manual_retry_keeps_the_history_of_attempt_errors(client, user, claim):
    jid = submit(client, user, max_attempts=1)
    [(_, worker)] = claim()
    fail(client, jid, worker, "boom")
    again = client.post(f"/v1/jobs/{jid}/retry", headers=user).json()
    assert again["error"] is None and [e["error"] for e in again["attempt_errors"]] == ["boom"]


def test_a_lost_worker_is_recorded_as_the_attempts_error(client, user, claim, session_factory):
    jid = submit(client, user, max_attempts=3)
    [(_, worker)] = claim()
    with session_factory() as s:
        jobs.worker_lost(s, jid, RetryPolicy(base_s=0), "no heartbeat for 60s")
    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert [(e["attempt"], e["error"]) for e in job["attempt_errors"]] == [
        (1, "no heartbeat for 60s")
    ]
    assert client.post(f"/v1/jobs/{jid}/heartbeat", headers=worker).status_code == 401


WORKER_ROUTES = (
    ("events", {"events": [{"seq": 1, "type": "log", "data": {}}]}),
    ("heartbeat", None),
    ("complete", {"outcome": "failed", "error": "late"}),
)


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
def test_the_job_token_expires_when_the_attempt_ends(client, user, claim, outcome):
    from tests.support.docs import small_arch_doc

    jid = submit(client, user, max_attempts=1)
    [(_, worker)] = claim()
    result = {
        "architecture": small_arch_doc(),
        "arch_params": {"alpha": [], "beta": []},
        "metrics": {},
    }
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": outcome, "error": "x", "result": result},
    )
    assert r.status_code == 200 and r.json()["status"] == outcome, r.text
    for route, body in WORKER_ROUTES:
        r = client.post(f"/v1/jobs/{jid}/{route}", headers=worker, json=body)
        assert r.status_code == 401, (route, r.text)


def test_the_job_token_expires_when_the_executor_cannot_start_it(
    client, user, claim, session_factory
):
    jid = submit(client, user)
    [(_, worker)] = claim()
    with session_factory() as s:
        jobs.fail_to_start(s, jid, "OSError: no Ray", RetryPolicy(base_s=0))
    assert client.post(f"/v1/jobs/{jid}/heartbeat", headers=worker).status_code == 401
    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert (job["status"], job["attempt"]) == ("queued", 2)
    assert job["attempt_errors"][0]["error"] == "executor failed to start the job: OSError: no Ray"


@pytest.mark.parametrize("type_", ["status", "cancel_requested", "derived", "end", "Log"])
def test_a_job_token_posts_only_worker_event_types(client, user, claim, type_):
    jid = submit(client, user)
    [(_, worker)] = claim()
    r = client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={
            "events": [
                {"seq": 1, "type": "step", "data": {}},
                {"seq": 2, "type": type_, "data": {"from": "running", "to": "succeeded"}},
            ]
        },
    )
    assert r.status_code == 403 and repr(type_) in r.json()["detail"], r.text
    assert events(client, jid, user, "step") == []  # the whole batch is refused
    r = client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={
            "events": [
                {"seq": s, "type": t, "data": {}}
                for s, t in enumerate(("step", "epoch", "arch", "log", "error"))
            ]
        },
    )
    assert r.status_code == 200 and r.json()["accepted"] == 5, r.text

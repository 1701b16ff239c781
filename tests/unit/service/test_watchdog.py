"""Every failure is bounded: the progress watchdog ends an attempt whose worker heartbeats but
reports no step (retried, then failed, each time explained), and an executor that cannot start
a job uses the same retry budget. Driven through ``Dispatcher.tick()`` with an injected clock;
worker events and heartbeats go through :mod:`service.jobs` at chosen times."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from service import jobs
from service.dispatcher import Dispatcher
from service.metrics import Metrics
from service.models import Job, JobEvent, utcnow
from service.schemas import EventIn
from tests.support.fake_executor import FakeExecutor, vanish

#: The injected clock's origin, later than any job the tests create (so they are runnable).
T0 = (utcnow() + timedelta(hours=1)).replace(microsecond=0)


class KillableExecutor(FakeExecutor):
    """A fake executor with Ray's ``kill(job_id)`` beside the cooperative ``cancel``."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.killed: list[int] = []

    def kill(self, job_id: int) -> None:
        self.killed.append(job_id)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_dispatcher(make_settings, session_factory, clock):
    def make(executor=None, **settings_kw):
        values = dict(
            heartbeat_timeout_s=10**6,
            max_attempts=2,
            retry_backoff_s=0,
            watchdog_startup_s=900,
            watchdog_min_s=300,
            watchdog_factor=20,
        )
        values.update(settings_kw)
        return Dispatcher(
            session_factory,
            executor or KillableExecutor(behaviour=vanish),
            make_settings(**values),
            metrics=Metrics(),
            clock=clock,
            reconcile_on_start=False,
        )

    return make


@pytest.fixture
def submit(client, user):
    def _submit(**kw) -> int:
        r = client.post("/v1/jobs", headers=user, json={"kind": "search", **kw})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    return _submit


def steps(session_factory, jid: int, at: datetime, *positions: tuple[int, int]) -> int:
    """The worker reports step events ``(epoch, step)`` in one batch at ``at`` → accepted."""
    events = [
        EventIn(
            seq=4 * (1000 * e + s),
            type="step",
            data={"phase": "weights", "epoch": e, "step": s, "loss": 1.0},
        )
        for e, s in positions
    ]
    with session_factory() as s:
        accepted, _, _ = jobs.ingest_events(s, jid, events, now=at)
    return accepted


def beat(session_factory, jid: int, at: datetime) -> None:
    with session_factory() as s:
        jobs.heartbeat(s, jid, now=at)


def job(session_factory, jid: int) -> Job:
    with session_factory() as s:
        row = s.get(Job, jid)
        s.expunge(row)
        return row


def event_data(session_factory, jid: int, type_: str) -> list[dict]:
    with session_factory() as s:
        return [
            e.data
            for e in s.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == jid, JobEvent.type == type_)
                .order_by(JobEvent.id)
            )
        ]


def stalled_count(d: Dispatcher) -> float:
    return d.metrics.registry.get_sample_value("densenas_watchdog_stalled_total")


def test_no_first_step_within_the_startup_allowance_ends_the_attempt(
    make_dispatcher, submit, session_factory, clock
):
    d = make_dispatcher()
    jid = submit(max_attempts=2)
    assert d.tick().started == [jid]
    for t in (300, 600, 899):  # the worker keeps heartbeating, but never steps
        beat(session_factory, jid, clock.at(t))
        assert d.tick().stalled == []
    assert job(session_factory, jid).status == "running"

    clock.at(905)
    report = d.tick()
    assert report.stalled == [jid] and report.started == [jid]  # retried at once (no backoff)
    reason = (
        "no progress: no step in 905 s since attempt 1 started (expected the first "
        "within 900 s) while the worker kept heartbeating (last heartbeat 6 s ago)"
    )
    j = job(session_factory, jid)
    assert (j.status, j.attempt, j.error) == ("running", 2, f"attempt 1: {reason}")
    assert [(e["attempt"], e["error"]) for e in j.attempt_errors] == [(1, reason)]
    assert [(e["attempt"], e["error"]) for e in event_data(session_factory, jid, "error")] == [
        (1, reason)
    ]
    retry = [e for e in event_data(session_factory, jid, "status") if e["from"] == "running"]
    assert [(e["to"], e["reason"], e["failed_attempt"], e["error"]) for e in retry] == [
        ("queued", "retrying", 1, reason)
    ]
    assert d.executor.killed == [jid] and d.executor.cancelled == []
    assert stalled_count(d) == 1.0


@pytest.mark.parametrize("spacing, limit", [(1, 300), (100, 2000)])
def test_silence_is_allowed_up_to_factor_times_the_step_time_with_a_floor(
    make_dispatcher, submit, session_factory, clock, spacing, limit
):
    """Steps ``spacing`` s apart: silent up to max(300 s, 20 × spacing) after the last."""
    d = make_dispatcher()
    jid = submit(max_attempts=1)
    d.tick()
    for i in range(4):
        assert steps(session_factory, jid, clock.at(10 + i * spacing), (0, i)) == 1
    last = 10 + 3 * spacing
    beat(session_factory, jid, clock.at(last + limit - 5))
    clock.at(last + limit - 1)
    assert d.tick().stalled == []
    clock.at(last + limit + 1)
    assert d.tick().stalled == [jid]
    j = job(session_factory, jid)
    last_at = (T0 + timedelta(seconds=last)).isoformat()
    assert (j.status, j.attempt) == ("failed", 1)
    assert j.error == (
        f"no progress: no step for {limit + 1} s (expected ≤ {limit} s; 4 step reports "
        f"{float(spacing):.1f} s apart on average; last step phase weights epoch 0 step 3 at "
        f"{last_at}) while the worker kept heartbeating (last heartbeat 6 s ago)"
    )
    failed = [e for e in event_data(session_factory, jid, "status") if e["from"] == "running"]
    assert [(e["to"], e["failed_attempt"], e["error"]) for e in failed] == [("failed", 1, j.error)]
    assert j.attempt_errors[0]["error"] == j.error


def test_a_worker_that_keeps_stepping_is_never_ended(
    make_dispatcher, submit, session_factory, clock
):
    d = make_dispatcher()
    jid = submit(max_attempts=1)
    d.tick()
    for i in range(40):  # 40 steps a minute apart, an "evaluation" of 280 s after step 19
        t = 120 + 60 * i + (280 if i >= 20 else 0)
        steps(session_factory, jid, clock.at(t), (i // 20, i % 20))
        assert d.tick().stalled == [], i
        clock.at(t + 59 + (280 if i == 19 else 0))
        assert d.tick().stalled == [], i
    j = job(session_factory, jid)
    assert (j.status, j.attempt, j.error) == ("running", 1, None)
    assert j.progress["pace"]["attempt"] == 1 and j.progress["pace"]["steps"] == 40
    assert (j.progress["step"]["epoch"], j.progress["step"]["step"]) == (1, 19)


def test_factor_zero_turns_the_watchdog_off(make_dispatcher, submit, session_factory, clock):
    d = make_dispatcher(watchdog_factor=0)
    jid = submit(max_attempts=1)
    d.tick()
    steps(session_factory, jid, clock.at(10), (0, 0))
    clock.at(10**5)
    assert d.tick().stalled == []
    assert job(session_factory, jid).status == "running"
    assert d.executor.killed == [] and stalled_count(d) == 0.0


def test_a_retried_attempt_gets_a_fresh_allowance(make_dispatcher, submit, session_factory, clock):
    d = make_dispatcher()
    jid = submit(max_attempts=2)
    d.tick()
    for i in range(3):  # attempt 1 steps every 5 s, then hangs
        steps(session_factory, jid, clock.at(20 + 5 * i), (0, i))
    clock.at(331)
    report = d.tick()
    assert report.stalled == [jid] and report.started == [jid]
    assert job(session_factory, jid).attempt == 2

    # attempt 2 started at 331: attempt 1's last step (at 30) is not its clock
    for t in (331 + 301, 331 + 899):
        clock.at(t)
        assert d.tick().stalled == [], t
    clock.at(331 + 901)
    assert d.tick().stalled == [jid]
    j = job(session_factory, jid)
    assert (j.status, j.attempt) == ("failed", 2)
    assert [e["attempt"] for e in j.attempt_errors] == [1, 2]
    assert j.attempt_errors[0]["error"].startswith("no progress: no step for 301 s ")
    assert j.attempt_errors[1]["error"].startswith(
        "no progress: no step in 901 s since attempt 2 started (expected the first within 900 s)"
    )
    assert d.executor.killed == [jid, jid] and stalled_count(d) == 2.0


def test_a_resumed_attempt_re_sending_known_steps_counts_as_progress(
    make_dispatcher, submit, session_factory, clock
):
    d = make_dispatcher()
    jid = submit(max_attempts=2)
    d.tick()
    steps(session_factory, jid, clock.at(10), (0, 0), (0, 1))
    clock.at(400)
    assert d.tick().stalled == [jid]
    # attempt 2 (claimed at 400) restores a checkpoint and re-runs step (0, 1): a duplicate
    assert steps(session_factory, jid, clock.at(1200), (0, 1)) == 0
    clock.at(1400)  # 1000 s after its start, 200 s after its step
    assert d.tick().stalled == []
    pace = job(session_factory, jid).progress["pace"]
    assert (pace["attempt"], pace["reports"], pace["steps"]) == (2, 1, 1)


def test_a_step_arriving_after_the_look_keeps_the_attempt(
    make_dispatcher, submit, session_factory, clock
):
    """``end_stalled`` judges the row again: a step that arrived since the read saves it."""
    d = make_dispatcher()
    jid = submit(max_attempts=1)
    d.tick()
    now = clock.at(1000)
    with session_factory() as s:
        [row] = jobs.running_started_before(s, now)
    assert d.watchdog.stall(row.attempt, row.started_at, row.heartbeat_at, row.progress, now)
    steps(session_factory, jid, now, (0, 0))
    with session_factory() as s:
        assert jobs.end_stalled(s, jid, row.attempt, d.watchdog, d.policy, now) is None
    assert job(session_factory, jid).status == "running"


def test_a_start_failure_is_retried_then_fails_after_max_attempts(
    make_dispatcher, submit, session_factory
):
    ex = FakeExecutor(start_error=RuntimeError("ray cluster unreachable at head:6379"))
    d = make_dispatcher(ex)
    jid = submit(max_attempts=2)
    assert d.tick().start_failed == [jid]
    j = job(session_factory, jid)
    assert (j.status, j.attempt) == ("queued", 2)
    assert d.tick().start_failed == [jid]
    assert d.tick().start_failed == []
    reason = "executor failed to start the job: RuntimeError: ray cluster unreachable at head:6379"
    j = job(session_factory, jid)
    assert (j.status, j.attempt, j.error) == ("failed", 2, reason)
    assert [(e["attempt"], e["error"]) for e in j.attempt_errors] == [(1, reason), (2, reason)]
    transitions = [
        (e["from"], e["to"], e.get("error")) for e in event_data(session_factory, jid, "status")
    ]
    assert transitions == [
        (None, "queued", None),
        ("queued", "running", None),
        ("running", "queued", reason),
        ("queued", "running", None),
        ("running", "failed", reason),
    ]
    assert (
        d.metrics.registry.get_sample_value("densenas_jobs_started_total", {"outcome": "error"})
        == 2.0
    )

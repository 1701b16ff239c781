"""Issue 16's scale paths on SQLite: claims sized by free resources and queue depth, a restart
reconcile that asks the executor once (``alive_many``), and batched event ingestion from
concurrent posters with duplicates (no event lost, none stored twice, every duplicate
counted). The PostgreSQL versions are in tests/integration/test_scale_pg.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select

from service import jobs
from service.dispatcher import MAX_CLAIM, Dispatcher
from service.models import Job, JobEvent, utcnow
from service.schemas import EventIn
from tests.support.fake_executor import FakeExecutor, vanish


class CapacityExecutor(FakeExecutor):
    """A fake executor that tells the cluster's capacity (as RayExecutor does)."""

    def __init__(self, cpus: float, **kw: Any) -> None:
        super().__init__(behaviour=vanish, **kw)
        self.cpus = cpus

    def capacity(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": 0.0}


class ManyExecutor(FakeExecutor):
    """Answers ``alive_many`` for ``alive_ids``; counts the one-by-one ``alive`` calls."""

    def __init__(self, alive_ids: set[int]) -> None:
        super().__init__(behaviour=vanish, alive_answer=lambda j: j in alive_ids)
        self.alive_ids = alive_ids
        self.many_calls: list[list[int]] = []
        self.single_calls: list[int] = []

    def alive_many(self, ids: list[int]) -> set[int]:
        self.many_calls.append(list(ids))
        return set(ids) & self.alive_ids

    def alive(self, job_id: int) -> bool:
        self.single_calls.append(job_id)
        return super().alive(job_id)


def run_threads(n: int, body: Callable[[int], None], timeout: float = 300) -> None:
    """``body(i)`` in ``n`` threads released together; the first error is raised here."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            body(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors


def _queue(factory, n: int, **kw: Any) -> list[int]:
    now = utcnow()
    rows = [
        dict(
            kind="search",
            status="queued",
            project="default",
            priority=0,
            spec={},
            attempt=1,
            max_attempts=kw.get("max_attempts", 1),
            scheduled_at=now - timedelta(seconds=1),
            cancel_requested=False,
            created_at=now,
            updated_at=now,
        )
        for _ in range(n)
    ]
    with factory() as s:
        ids = list(s.scalars(insert(Job).returning(Job.id), rows))
        s.commit()
    return ids


def _count(factory, *where: Any) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Job).where(*where)) or 0)


def test_claims_are_sized_by_the_queue_and_the_free_resources(make_settings, session_factory):
    settings = make_settings(claim_batch=4)
    _queue(session_factory, MAX_CLAIM + 44)
    d = Dispatcher(session_factory, CapacityExecutor(cpus=10_000), settings)
    first = d.dispatch()
    assert len(first.started) == MAX_CLAIM and d._more  # a full chunk: claim again at once
    second = d.dispatch()
    assert len(second.started) == 44 and not d._more  # the queue is empty now
    assert _count(session_factory, Job.status == "running") == MAX_CLAIM + 44

    # free resources bound a claim: 300 running jobs hold 300 of 310 CPUs
    _queue(session_factory, 50)
    d.executor = CapacityExecutor(cpus=MAX_CLAIM + 44 + 10)
    assert len(d.dispatch().started) == 10 and not d._more
    assert len(d.dispatch().started) == 0


def test_without_capacity_the_claim_stays_claim_batch_but_a_deep_queue_is_drained_at_once(
    make_settings, session_factory
):
    settings = make_settings(claim_batch=3, poll_interval_s=30)
    _queue(session_factory, 10)
    ex = FakeExecutor(behaviour=vanish)
    d = Dispatcher(session_factory, ex, settings, reconcile_on_start=False)
    assert len(d.dispatch().started) == 3 and d._more
    d._more = False
    d.start()  # the thread: tick, then the next claims at once (not after 30 s)
    try:
        deadline = utcnow() + timedelta(seconds=10)
        while _count(session_factory, Job.status == "queued") and utcnow() < deadline:
            threading.Event().wait(0.05)
    finally:
        d.stop()
    assert _count(session_factory, Job.status == "queued") == 0
    assert len(ex.started) == 10


def test_reconcile_asks_alive_many_once_and_checks_only_the_rest_one_by_one(
    make_settings, session_factory
):
    settings = make_settings()
    ids = _queue(session_factory, 30, max_attempts=1)
    with session_factory() as s:
        jobs.claim(s, "before-restart", 100)
    with session_factory() as s:  # a cancel pending on one live job: still checked one by one
        s.get(Job, ids[0]).cancel_requested = True
        s.commit()
    alive = set(ids[:20])
    ex = ManyExecutor(alive)
    d = Dispatcher(session_factory, ex, settings)
    report = d.reconcile()
    assert len(ex.many_calls) == 1 and sorted(ex.many_calls[0]) == ids
    assert sorted(ex.single_calls) == [ids[0], *ids[20:]]  # the cancel and the 10 unseen
    assert sorted(report.kept) == ids[:20] and sorted(report.lost) == ids[20:]
    assert ex.cancelled == [ids[0]]
    with session_factory() as s:
        reattached = s.scalars(
            select(JobEvent.job_id).where(JobEvent.type == "reattached").order_by(JobEvent.job_id)
        ).all()
        assert list(reattached) == ids[:20]
        assert _count(session_factory, Job.status == "failed") == 10
        lost = s.get(Job, ids[25])
        assert lost is not None and "control plane restarted" in (lost.error or "")

    # the reaper takes the same path for stale heartbeats (no reattached event)
    with session_factory() as s:
        s.execute(
            Job.__table__.update()
            .where(Job.id.in_(ids[:20]))
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
        s.commit()
    ex.many_calls.clear()
    ex.single_calls.clear()
    kept = d.reap().kept
    assert sorted(kept) == ids[:20] and len(ex.many_calls) == 1
    assert ex.single_calls == [ids[0]]
    with session_factory() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(JobEvent).where(JobEvent.type == "reattached")
            )
            == 20
        )


def test_reconcile_falls_back_to_one_by_one_when_alive_many_fails(make_settings, session_factory):
    ids = _queue(session_factory, 3)
    with session_factory() as s:
        jobs.claim(s, "x", 10)

    class Broken(ManyExecutor):
        def alive_many(self, ids: list[int]) -> set[int]:
            raise RuntimeError("cluster unreachable")

    ex = Broken(set(ids))
    report = Dispatcher(session_factory, ex, make_settings()).reconcile()
    assert sorted(report.kept) == ids and sorted(ex.single_calls) == ids


def _ingest_concurrently(factory, job_id: int, n_threads: int, per: int, overlap: int):
    """``n_threads`` posters, each ``per`` batches of 8 seqs; each batch overlaps the one
    before it by ``overlap`` seqs and poster k starts where poster k-1 is half way: many seqs
    are posted by several posters at once → (accepted, duplicates, seqs posted)."""
    totals = {"accepted": 0, "duplicates": 0, "posted": 0}
    seqs_posted: set[int] = set()
    lock = threading.Lock()

    def poster(k: int) -> None:
        start = k * per * (8 - overlap) // 2
        for b in range(per):
            s0 = start + b * (8 - overlap)
            batch = [
                EventIn(seq=s, type="step", data={"step": s, "phase": "weights"})
                for s in range(s0, s0 + 8)
            ]
            with factory() as s:
                acc, dup, _ = jobs.ingest_events(s, job_id, batch)
            with lock:
                totals["accepted"] += acc
                totals["duplicates"] += dup
                totals["posted"] += len(batch)
                seqs_posted.update(e.seq for e in batch)

    run_threads(n_threads, poster)
    return totals, seqs_posted


def check_concurrent_ingest(factory, job_id: int, n_threads: int = 4, per: int = 25) -> None:
    totals, seqs = _ingest_concurrently(factory, job_id, n_threads, per, overlap=3)
    with factory() as s:
        stored = list(
            s.scalars(
                select(JobEvent.seq).where(JobEvent.job_id == job_id, JobEvent.type == "step")
            )
        )
        job = s.get(Job, job_id)
        assert job is not None
        pace = job.progress["pace"]
    assert len(stored) == len(set(stored)) == len(seqs)  # none lost, none stored twice
    assert set(stored) == seqs
    assert totals["accepted"] == len(seqs)
    assert totals["duplicates"] == totals["posted"] - len(seqs) > 0  # every duplicate counted
    assert pace  # the watchdog's step clock saw the batches


def test_concurrent_batches_with_duplicates_lose_and_duplicate_nothing_sqlite(
    make_settings, session_factory
):
    [job_id] = _queue(session_factory, 1)
    with session_factory() as s:
        jobs.claim(s, "t", 1)
    check_concurrent_ingest(session_factory, job_id)


def test_a_heartbeat_soon_after_the_last_one_is_not_written_again(session_factory):
    from service.jobs.events import HEARTBEAT_COALESCE_S

    [job_id] = _queue(session_factory, 1)
    with session_factory() as s:
        [(job, _)] = jobs.claim(s, "t", 1)
        claimed_beat = job.heartbeat_at
    now = utcnow()
    with session_factory() as s:
        assert jobs.heartbeat(s, job_id, now).heartbeat_at == claimed_beat  # coalesced
    later = claimed_beat + timedelta(seconds=HEARTBEAT_COALESCE_S + 1)
    with session_factory() as s:
        assert jobs.heartbeat(s, job_id, later).heartbeat_at == later  # written

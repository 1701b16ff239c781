"""The control plane on a real PostgreSQL: migrations without drift, the SKIP LOCKED claim under
concurrent dispatchers, ON CONFLICT dedupe, idempotency races, and the dispatcher end to end.

Each test gets a database of its own (created from DENSENAS_TEST_PG_URL's server, dropped after).
Locally the tests skip without DENSENAS_TEST_PG_URL; under CI=true they fail instead.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, insert, select, text

from service import jobs
from service.db import downgrade, make_engine, make_session_factory, run_migrations
from service.models import Job, JobEvent, utcnow
from service.schemas import EventIn
from service.settings import Settings
from tests.support.checks import (
    assert_job_reads_match,
    callers,
    first_event_after_post,
    produce_jobs,
)
from tests.support.fake_executor import FakeExecutor, succeed
from tests.support.live import LiveServer
from tests.support.serve import Server
from tests.support.waiting import wait_status

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def migrated(pg_db: str) -> str:
    run_migrations(pg_db)
    return pg_db


def test_migrations_have_no_drift_and_downgrade(pg_db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from service.models import Base

    run_migrations(pg_db)
    engine = make_engine(pg_db)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(ctx, Base.metadata) == []
            claim_index = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_claim'")
            ).scalar()
            assert "priority DESC" in claim_index and "WHERE" in claim_index
        downgrade(pg_db, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        run_migrations(pg_db)
        assert {"jobs", "job_events", "tokens"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_status_check_constraint_holds(migrated):
    from sqlalchemy.exc import IntegrityError

    factory = make_session_factory(make_engine(migrated))
    with factory() as s:
        now = utcnow()
        s.add(
            Job(
                kind="search",
                status="exploded",
                project="p",
                spec={},
                attempt=1,
                max_attempts=1,
                scheduled_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        with pytest.raises(IntegrityError):
            s.commit()


def test_concurrent_dispatchers_claim_each_job_exactly_once(migrated):
    n_jobs, n_loops = 1000, 4
    setup = make_engine(migrated)
    now = utcnow()
    with setup.begin() as c:
        c.execute(
            insert(Job),
            [
                dict(
                    kind="search",
                    status="queued",
                    project="p",
                    priority=i % 5,
                    spec={},
                    attempt=1,
                    max_attempts=1,
                    scheduled_at=now,
                    cancel_requested=False,
                    created_at=now,
                    updated_at=now,
                )
                for i in range(n_jobs)
            ],
        )
    setup.dispose()
    claimed: list[list[int]] = [[] for _ in range(n_loops)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_loops)

    def loop(i: int) -> None:
        engine = make_engine(migrated, pool_size=1, max_overflow=0)  # its own connections
        factory = make_session_factory(engine)
        try:
            barrier.wait()
            while True:
                with factory() as s:
                    got = jobs.claim(s, f"dispatcher-{i}", 10)
                if not got:
                    return
                claimed[i].extend(j.id for j, _ in got)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(n_loops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    every = [j for part in claimed for j in part]
    assert len(every) == n_jobs and len(set(every)) == n_jobs
    assert all(claimed), "every dispatcher should have won some jobs"
    check = make_engine(migrated)
    try:
        with check.connect() as c:
            rows = c.execute(text("SELECT claimed_by, count(*) FROM jobs GROUP BY claimed_by"))
            by = dict(rows.all())
            assert sum(by.values()) == n_jobs and None not in by
            assert (
                c.execute(text("SELECT count(*) FROM jobs WHERE status <> 'running'")).scalar() == 0
            )
            assert (
                c.execute(text("SELECT count(*) FROM tokens WHERE job_id IS NOT NULL")).scalar()
                == n_jobs
            )
            events = c.execute(
                text("SELECT count(*) FROM job_events WHERE type = 'status'")
            ).scalar()
            assert events == n_jobs
    finally:
        check.dispose()


def _settings(migrated: str, tmp_path: Path, url: str, **kw) -> Settings:
    values = dict(
        database_url=migrated,
        data_dir=tmp_path / "data",
        executor="none",
        public_url=url,
        poll_interval_s=0.05,
        retry_backoff_s=0,
        sse_poll_s=0.05,
    )
    values.update(kw)
    return Settings(**values)


def test_dispatcher_end_to_end_on_postgres(migrated, tmp_path):
    ex = FakeExecutor(behaviour=succeed)
    with LiveServer(lambda url: _settings(migrated, tmp_path, url), ex) as live:
        c = live.client(live.admin_token())
        job = c.post("/v1/jobs", json={"kind": "search"}).json()
        done = wait_status(c, job["id"], {"succeeded", "failed"})
        assert ex.errors == [] and done["status"] == "succeeded", done
        arch = c.get(f"/v1/architectures/{done['result']['architecture_id']}").json()
        assert arch["mult_adds"] > 0 and arch["job_id"] == job["id"]
        assert done["progress"]["step"]["step"] == 2
        # replaying the worker's events is a no-op (ON CONFLICT DO NOTHING on PostgreSQL)
        with live.app.state.session_factory() as s:
            n = len(s.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all())
        events = c.get(f"/v1/jobs/{job['id']}/events?format=json&limit=1000").json()["data"]
        assert len(events) == n
        assert [e["seq"] for e in events if e["seq"] is not None] == [0, 1, 2, 3]


def test_duplicate_seq_and_idempotency_races_on_postgres(migrated, tmp_path):
    with LiveServer(lambda url: _settings(migrated, tmp_path, url)) as live:
        c = live.client(live.admin_token())
        ids: list[int] = []
        codes: list[int] = []

        def submit() -> None:
            with live.client(live.admin_token()) as cc:
                r = cc.post(
                    "/v1/jobs", json={"kind": "search"}, headers={"Idempotency-Key": "race-1"}
                )
                codes.append(r.status_code)
                ids.append(r.json()["id"])

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(set(ids)) == 1 and sorted(codes).count(201) == 1, codes
        with live.app.state.session_factory() as s:
            [(job, token)] = jobs.claim(s, "t", 1)
        w = live.client(token)
        batch = [{"seq": i, "type": "step", "data": {"step": i}} for i in range(50)]
        assert w.post(f"/v1/jobs/{job.id}/events", json={"events": batch}).json()["accepted"] == 50
        again = w.post(
            f"/v1/jobs/{job.id}/events",
            json={"events": batch[25:] + [{"seq": 50, "type": "step", "data": {"step": 50}}]},
        ).json()
        assert (again["accepted"], again["duplicates"]) == (1, 25)
        page = c.get(f"/v1/jobs/{job.id}/events?format=json&limit=1000").json()["data"]
        assert [e["seq"] for e in page if e["seq"] is not None] == list(range(51))


def _mint(live: LiveServer):
    from service.tokens import create_token

    def mint(name: str, project: str = "default", admin: bool = False) -> dict[str, str]:
        with live.app.state.session_factory() as s:
            plaintext = create_token(s, name, project, admin)
            s.commit()
        return {"Authorization": f"Bearer {plaintext}"}

    return mint


def test_hot_path_reads_match_the_orm_route_on_postgres(migrated, tmp_path):
    """psycopg's own types (jsonb, timestamptz in UTC) give the same bytes as the ORM's."""
    ex = FakeExecutor(behaviour=succeed)
    with (
        LiveServer(lambda url: _settings(migrated, tmp_path, url), ex) as live,
        LiveServer(lambda url: _settings(migrated, tmp_path, url, hot_path=False)) as plain,
    ):
        ids = produce_jobs(live)
        with live.client() as a, plain.client() as b:
            assert_job_reads_match(a, b, ids, callers(live, _mint(live)))


@pytest.mark.flaky(reruns=2, reruns_delay=2)  # a wake-up within 2 s, timed on shared cores
def test_event_posted_to_one_replica_wakes_a_stream_on_another(migrated, tmp_path):
    """Two API processes on one database (LISTEN/NOTIFY), streams polling only every 30 s."""
    slow = dict(sse_poll_s=30)
    with (
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as a,
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as b,
    ):
        assert first_event_after_post(stream_from=b, post_to=a) < 2.0
        assert first_event_after_post(stream_from=a, post_to=a) < 2.0


@pytest.mark.flaky(reruns=2, reruns_delay=2)  # a wake-up within 2 s, timed on shared cores
def test_reads_and_notifications_survive_killed_connections(migrated, tmp_path):
    """Every server connection of the database is terminated (what a PostgreSQL restart does to
    a pool): the next job read and the next cross-replica wake-up still work."""
    slow = dict(sse_poll_s=30)
    with (
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as a,
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as b,
    ):
        c = a.client(a.admin_token())
        jid = c.post("/v1/jobs", json={"kind": "search"}).json()["id"]
        for _ in range(3):
            assert c.get(f"/v1/jobs/{jid}").status_code == 200
        killer = create_engine(migrated, isolation_level="AUTOCOMMIT")
        with killer.connect() as k:
            killed = k.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        killer.dispose()
        assert killed >= 2  # at least the read pool's and the listener's connections
        assert c.get(f"/v1/jobs/{jid}").status_code == 200
        # the listeners reconnect after 1 s; a wake-up across replicas works again
        deadline = time.monotonic() + 15
        while True:
            try:
                assert first_event_after_post(stream_from=b, post_to=a, timeout=10) < 2.0
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise


@pytest.mark.flaky(reruns=2, reruns_delay=2)  # a wake-up within 2 s, timed on shared cores
def test_a_revocation_on_one_replica_is_honoured_by_another_at_once(migrated, tmp_path):
    """Token caches of 60 s in two processes: only the NOTIFY sent by the revoking process can
    empty the other's cache within the 2 s allowed here."""
    cached = dict(token_cache_s=60)
    (tmp_path / "b").mkdir()
    other = Server(
        tmp_path / "b", migrated, executor="none", extra_env={"DENSENAS_TOKEN_CACHE_S": "60"}
    )
    with LiveServer(lambda url: _settings(migrated, tmp_path, url, **cached)) as a:
        admin = a.client(a.admin_token())
        created = admin.post("/v1/tokens", json={"name": "leaver", "project": "vision"}).json()
        other.start()
        try:
            with httpx.Client(
                base_url=other.url,
                timeout=30,
                headers={"Authorization": f"Bearer {created['token']}"},
            ) as user:
                assert user.get("/v1/me").status_code == 200  # verified and cached there
                assert admin.delete(f"/v1/tokens/{created['id']}").status_code == 204
                deadline = time.monotonic() + 2.0
                while user.get("/v1/me").status_code != 401:
                    assert time.monotonic() < deadline, "the other process still accepts it"
                    time.sleep(0.02)
        finally:
            other.stop()


def _event_ids_drawn(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT last_value FROM job_events_id_seq")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("writer", ["ingest", "orm"])
def test_one_jobs_event_ids_are_drawn_only_under_its_row_lock(migrated, writer):
    """While another transaction holds the job's row (as a state transition does), a writer of
    that job's events waits *before* drawing ids from the sequence — so the job's events commit
    in id order and a stream reading ``id > last`` cannot skip a row committed late."""
    factory = make_session_factory(make_engine(migrated))
    with factory() as s:
        s.add(
            Job(
                id=1,
                kind="search",
                status="running",
                project="default",
                spec={},
                attempt=1,
                max_attempts=3,
            )
        )
        s.add(JobEvent(job_id=1, type="status", data={}))
        s.commit()
    drawn = _event_ids_drawn(migrated)
    holder = factory()
    holder.execute(select(Job).where(Job.id == 1).with_for_update())  # e.g. a cancel's UPDATE
    done = threading.Event()

    def write() -> None:
        with factory() as s:
            if writer == "ingest":
                jobs.ingest_events(s, 1, [EventIn(seq=5, type="log", data={"m": 1})])
            else:
                s.add(JobEvent(job_id=1, type="derived", data={}))
                s.commit()
        done.set()

    t = threading.Thread(target=write)
    t.start()
    try:
        assert not done.wait(1.0), "the writer did not wait for the job's row lock"
        assert _event_ids_drawn(migrated) == drawn, "ids were drawn before the lock"
    finally:
        holder.add(JobEvent(job_id=1, type="status", data={"to": "first"}))
        holder.commit()  # its event gets the next id and commits first
        holder.close()
    t.join(30)
    assert done.is_set()
    with factory() as s:
        ids = s.execute(
            select(JobEvent.id, JobEvent.type).where(JobEvent.job_id == 1).order_by(JobEvent.id)
        ).all()
    assert [t for _i, t in ids] == ["status", "status", "log" if writer == "ingest" else "derived"]


def test_a_transaction_writing_events_of_thousands_of_jobs_still_wakes_other_replicas(
    migrated, tmp_path
):
    """The job ids do not fit one NOTIFY payload (< 8,000 bytes): every stream is woken."""
    slow = dict(sse_poll_s=30)
    with (
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as a,
        LiveServer(lambda url: _settings(migrated, tmp_path, url, **slow)) as b,
    ):
        c = b.client(b.admin_token())
        jid = c.post("/v1/jobs", json={"kind": "search"}).json()["id"]
        with a.app.state.session_factory() as s:  # a's factory: its commits notify
            s.add_all(
                Job(
                    kind="search",
                    status="queued",
                    project="default",
                    spec={},
                    attempt=1,
                    max_attempts=3,
                )
                for _ in range(2000)
            )
            s.flush()
            ids = s.scalars(select(Job.id).where(Job.id != jid)).all()
            s.commit()
        arrived = threading.Event()

        def listen() -> None:
            with c.stream("GET", f"/v1/jobs/{jid}/events", timeout=httpx.Timeout(20)) as r:
                for line in r.iter_lines():
                    if '"bulk"' in line:
                        arrived.set()
                        return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        time.sleep(1.0)  # the stream has read the job's log and waits
        with a.app.state.session_factory() as s:
            s.add_all(JobEvent(job_id=i, type="log", data={"bulk": True}) for i in ids)
            s.add(JobEvent(job_id=jid, type="log", data={"bulk": True}))
            t0 = time.monotonic()
            s.commit()
        assert arrived.wait(10) and time.monotonic() - t0 < 2.0, "the stream was not woken"

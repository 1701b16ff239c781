"""Issue 16's scale paths on a real PostgreSQL: four dispatchers claiming 1,000 jobs in claims
sized by the free resources (none claimed twice, never more than the cluster holds), and
concurrent event batches with duplicates (none lost, none stored twice, every duplicate
counted). The SQLite versions are in tests/unit/service/test_scale_paths.py; the plain
SKIP LOCKED claim under 4 dispatchers is in test_service_pg.py."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service import jobs
from service.db import make_engine, make_session_factory, run_migrations
from service.dispatcher import Dispatcher
from service.settings import Settings
from tests.unit.service.test_scale_paths import (
    CapacityExecutor,
    _queue,
    check_concurrent_ingest,
    run_threads,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def migrated(pg_db: str) -> str:
    run_migrations(pg_db)
    return pg_db


def _dispatch_all(url: str, tmp_path, cpus: float, n_loops: int = 4) -> list[list[int]]:
    claimed: list[list[int]] = [[] for _ in range(n_loops)]
    settings = Settings(database_url=url, data_dir=tmp_path / "data", executor="none")

    def loop(i: int) -> None:
        engine = make_engine(url, pool_size=2, max_overflow=0)  # its own connections
        factory = make_session_factory(engine)
        d = Dispatcher(factory, CapacityExecutor(cpus=cpus), settings, name=f"d{i}")
        try:
            while got := d.dispatch().started:
                claimed[i].extend(got)
        finally:
            engine.dispose()

    run_threads(n_loops, loop)
    return claimed


def test_four_dispatchers_claim_1000_jobs_in_sized_claims_exactly_once(migrated, tmp_path):
    engine = make_engine(migrated)
    factory = make_session_factory(engine)
    ids = _queue(factory, 1000)
    claimed = _dispatch_all(migrated, tmp_path, cpus=10_000)
    every = [j for part in claimed for j in part]
    assert sorted(every) == ids  # each job once
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM jobs WHERE status = 'running'")).scalar() == (
            1000
        )
        assert (
            c.execute(text("SELECT count(*) FROM tokens WHERE job_id IS NOT NULL")).scalar() == 1000
        )
        assert (
            c.execute(text("SELECT count(*) FROM job_events WHERE type = 'status'")).scalar()
            == 1000
        )
    engine.dispose()


def test_four_dispatchers_never_claim_more_than_the_free_resources(migrated, tmp_path):
    """600 CPUs, 1,000 one-CPU jobs: the dispatchers plan one at a time (an advisory lock
    from reading what runs to the claim's commit), so exactly 600 run — not 4 × 600."""
    engine = make_engine(migrated)
    factory = make_session_factory(engine)
    _queue(factory, 1000)
    claimed = _dispatch_all(migrated, tmp_path, cpus=600)
    every = [j for part in claimed for j in part]
    assert len(every) == len(set(every)) == 600
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM jobs WHERE status = 'running'")).scalar() == (
            600
        )
    engine.dispose()


def test_concurrent_event_batches_with_duplicates_on_postgres(migrated):
    engine = make_engine(migrated)
    factory = make_session_factory(engine)
    [job_id] = _queue(factory, 1)
    with factory() as s:
        jobs.claim(s, "t", 1)
    check_concurrent_ingest(factory, job_id, n_threads=6, per=40)
    engine.dispose()

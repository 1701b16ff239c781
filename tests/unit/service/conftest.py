"""Fixtures for control-plane unit tests: a real SQLite file per test (migrated once per session
and copied), the real app through TestClient, and tokens minted the way the CLI mints them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import make_engine, make_session_factory, run_migrations
from service.settings import Settings
from service.tokens import create_token


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    run_migrations(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_db: Path) -> str:
    target = tmp_path / "densenas.db"
    shutil.copy(migrated_db, target)
    return f"sqlite:///{target}"


@pytest.fixture
def make_settings(tmp_path: Path, db_url: str) -> Callable[..., Settings]:
    def make(**overrides) -> Settings:
        values = dict(
            database_url=db_url,
            data_dir=tmp_path / "data",
            executor="none",
            heartbeat_timeout_s=60,
            poll_interval_s=0.05,
            retry_backoff_s=0,
            sse_poll_s=0.05,
            sse_ping_s=1,
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def session_factory(client, app):
    return app.state.session_factory


@pytest.fixture
def admin_token(client, settings: Settings) -> str:
    return settings.admin_token_path.read_text().strip()


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def mint(session_factory) -> Callable[..., dict[str, str]]:
    """mint(name, project="default", admin=False) → auth headers for a fresh token."""

    def _mint(name: str = "user", project: str = "default", admin: bool = False):
        with session_factory() as s:
            plaintext = create_token(s, name, project, admin)
            s.commit()
        return {"Authorization": f"Bearer {plaintext}"}

    return _mint


@pytest.fixture
def user(mint) -> dict[str, str]:
    return mint("alice", "vision")


@pytest.fixture
def other(mint) -> dict[str, str]:
    return mint("bob", "speech")


def count_rows(url: str, table: str) -> int:
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture
def rows(db_url: str) -> Callable[[str], int]:
    return lambda table: count_rows(db_url, table)


@pytest.fixture
def claim(session_factory):
    """claim(n) → [(job_id, worker headers)] through the dispatcher's claim transaction."""
    from service import jobs

    def _claim(limit: int = 1):
        with session_factory() as s:
            out = jobs.claim(s, "test-dispatcher", limit)
            return [(job.id, {"Authorization": f"Bearer {token}"}) for job, token in out]

    return _claim


def make_session(url: str):
    return make_session_factory(make_engine(url))

"""Suite-wide settings: Ray must stay on loopback here, and required services fail under CI."""

from __future__ import annotations

import os

import pytest

# Ray 2.60 swaps 127.0.0.1 for the eth0 address unless this is set in every Ray process.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(available: bool, what: str) -> None:
    """Skip locally when a service is missing, but fail under CI, where .ci/run starts it."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("DENSENAS_TEST_PG_URL", "")
    require_service(bool(url), "PostgreSQL (DENSENAS_TEST_PG_URL)")
    return url


@pytest.fixture
def pg_db(pg_url: str):
    """A fresh, empty database on the test server → its URL (dropped afterwards)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"densenas_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

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

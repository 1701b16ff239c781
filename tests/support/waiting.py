"""Polling until something holds: a predicate, or a job's status over the REST API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """``predicate()``'s first truthy value, polled every ``interval`` s for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_status(
    client: httpx.Client, job_id: int, statuses: set[str] | str, timeout: float = 30.0
) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def check() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in wanted else None

    return wait_for(check, timeout, what=f"job {job_id} to be {sorted(wanted)}")

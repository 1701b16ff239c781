"""Which executor runs jobs: the one place that knows the names in ``DENSENAS_EXECUTOR``.

``workers.executors`` is imported lazily: it pulls in Ray, which an API started with
``executor=none`` (or a test with a fake executor) never needs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .settings import Settings


@runtime_checkable
class Executor(Protocol):
    """docs/DESIGN.md "Executors": start one attempt, say whether a job's worker still runs,
    stop one, release everything."""

    def start(self, payload: Any) -> None: ...

    def alive(self, job_id: int) -> bool: ...

    def cancel(self, job_id: int) -> None: ...

    def shutdown(self) -> None: ...


def make_executor(settings: Settings) -> Executor | None:
    if settings.executor == "none":
        return None
    from workers import executors

    if settings.executor == "inline":
        return executors.InlineExecutor()
    # No RAY_ADDRESS: the executor starts an embedded single-machine Ray itself (and sets the
    # environment that keeps it on loopback, only then); with one it joins that cluster.
    return executors.RayExecutor(address=settings.ray_address)

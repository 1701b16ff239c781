"""The reporter seam: training loops report through it, so one loop runs in a test, process or Ray.

A loop calls ``reporter.report(event_type, **data)`` for every step/epoch it wants seen and asks
``reporter.should_stop()`` once per step; a true answer makes the loop raise :class:`Stopped`
after finishing the current step (the caller decides whether that means *cancelled*).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class Stopped(Exception):
    """Raised by a loop when its reporter asked it to stop (cancellation)."""


@runtime_checkable
class Reporter(Protocol):
    def report(self, event_type: str, **data: Any) -> None: ...

    def should_stop(self) -> bool: ...


class NullReporter:
    def report(self, event_type: str, **data: Any) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class ListReporter:
    """Keeps every event in memory: for tests and notebooks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.stop_after = stop_after

    def report(self, event_type: str, **data: Any) -> None:
        self.events.append((event_type, data))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.events) >= self.stop_after

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [d for t, d in self.events if t == event_type]

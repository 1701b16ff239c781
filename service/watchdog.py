"""The progress watchdog: a running attempt whose worker keeps heartbeating but reports no
``step`` event for too long is stuck (a deadlocked collective, a hung data loader, a GPU that
stopped answering), and the heartbeat alone would keep it running forever.

Each batch of events with steps in it is noted in ``job.progress["pace"]`` for the attempt that
sent it (:func:`record_steps`): when the attempt's first and last step reports arrived and how
many step reports there were. A pace of another attempt counts as none, so a retried attempt
never inherits its predecessor's clock. The rule (:meth:`Watchdog.stall`):

- before the attempt's first step report: ``startup_s`` since the claim (``started_at``) —
  building the model, loading data and restoring a checkpoint come first;
- after it: ``max(min_s, factor × the mean time between this attempt's step reports)`` since
  the last one. The floor covers what is slower than a step by nature: each epoch ends with an
  evaluation (and a batch-norm recalibration for a search), and the reporter sends events in
  batches every couple of seconds.

A step event the server already has (a resumed attempt re-running steps its predecessor
reported) still counts: the worker is stepping. ``factor = 0`` turns the watchdog off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .settings import Settings

#: The key of ``job.progress`` that holds the attempt's step clock.
PACE = "pace"


def record_steps(
    progress: dict[str, Any], attempt: int, steps: Sequence[Mapping[str, Any]], now: datetime
) -> None:
    """Note in ``progress`` (in place) that ``attempt`` reported the step events ``steps`` (their
    data, in order) at ``now``; a pace of an earlier attempt is replaced."""
    if not steps:
        return
    pace = progress.get(PACE)
    if not isinstance(pace, dict) or pace.get("attempt") != attempt:
        pace = {"attempt": attempt, "first_at": now.isoformat(), "reports": 0, "steps": 0}
    last = steps[-1]
    progress[PACE] = {
        **pace,
        "last_at": now.isoformat(),
        "reports": pace["reports"] + 1,
        "steps": pace["steps"] + len(steps),
        "last": {k: last.get(k) for k in ("phase", "epoch", "step")},
    }


def attempt_pace(progress: Mapping[str, Any] | None, attempt: int) -> dict[str, Any] | None:
    """The step clock of ``attempt`` in ``progress``, or None before its first step report."""
    pace = (progress or {}).get(PACE)
    return pace if isinstance(pace, dict) and pace.get("attempt") == attempt else None


def _seconds(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds()


def _describe_step(last: Mapping[str, Any] | None) -> str:
    last = last or {}
    parts = [f"{k} {last[k]}" for k in ("phase", "epoch", "step") if last.get(k) is not None]
    return " ".join(parts) or "a step"


@dataclass(frozen=True)
class Watchdog:
    """The watchdog's limits (the ``watchdog_*`` settings)."""

    #: Allowance from the claim to the attempt's first step report.
    startup_s: float = 900.0
    #: Least silence allowed after a step report (an epoch's evaluation fits in it).
    min_s: float = 300.0
    #: Silence allowed in units of the mean time between step reports; 0: watchdog off.
    factor: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Watchdog:
        """From ``watchdog_<field>`` of each field."""
        return cls(
            **{name: getattr(settings, f"watchdog_{name}") for name in cls.__dataclass_fields__}
        )

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    @property
    def earliest_s(self) -> float:
        """No attempt running for less than this can be stalled (the watchdog's query filter)."""
        return min(self.startup_s, self.min_s)

    def expected_s(self, pace: Mapping[str, Any]) -> float | None:
        """Mean time between the attempt's step reports; None with fewer than two."""
        reports = int(pace.get("reports") or 0)
        if reports < 2:
            return None
        span = _seconds(
            datetime.fromisoformat(pace["last_at"]), datetime.fromisoformat(pace["first_at"])
        )
        return max(0.0, span) / (reports - 1)

    def limit_s(self, pace: Mapping[str, Any]) -> float:
        """The longest silence allowed after a step report of this attempt."""
        expected = self.expected_s(pace)
        return self.min_s if expected is None else max(self.min_s, self.factor * expected)

    def stall(
        self,
        attempt: int,
        started_at: datetime | None,
        heartbeat_at: datetime | None,
        progress: Mapping[str, Any] | None,
        now: datetime,
    ) -> str | None:
        """Why the running ``attempt`` counts as stuck at ``now``, or None while it is not."""
        if not self.enabled or started_at is None:
            return None
        beat = (
            ""
            if heartbeat_at is None
            else f" (last heartbeat {max(0.0, _seconds(now, heartbeat_at)):.0f} s ago)"
        )
        pace = attempt_pace(progress, attempt)
        if pace is None:
            waited = _seconds(now, started_at)
            if waited <= self.startup_s:
                return None
            return (
                f"no progress: no step in {waited:.0f} s since attempt {attempt} started "
                f"(expected the first within {self.startup_s:.0f} s) while the worker kept "
                f"heartbeating{beat}"
            )
        last_at = datetime.fromisoformat(pace["last_at"])
        waited, limit = _seconds(now, last_at), self.limit_s(pace)
        if waited <= limit:
            return None
        expected = self.expected_s(pace)
        pace_text = (
            ""
            if expected is None
            else f"; {pace['reports']} step reports {expected:.1f} s apart on average"
        )
        return (
            f"no progress: no step for {waited:.0f} s (expected ≤ {limit:.0f} s{pace_text}; "
            f"last step {_describe_step(pace.get('last'))} at {last_at.isoformat()}) while "
            f"the worker kept heartbeating{beat}"
        )

"""The automatic retry policy, as a pure function of the attempt number (procrastinate's
``RetryStrategy``): exponential backoff with a cap, so a worker that keeps dying does not spin
the cluster, and a job stops after ``max_attempts`` tries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .settings import Settings


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 5.0
    factor: float = 2.0
    max_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            settings.retry_backoff_s, settings.retry_backoff_factor, settings.retry_backoff_max_s
        )

    def should_retry(self, attempt: int, max_attempts: int) -> bool:
        """``attempt`` is the one that just ended (1-based)."""
        return attempt < max_attempts

    def delay_s(self, attempt: int) -> float:
        """Wait before the attempt after ``attempt``: base, base·factor, base·factor², …"""
        return min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))

    def next_run(self, attempt: int, now: datetime) -> datetime:
        return now + timedelta(seconds=self.delay_s(attempt))

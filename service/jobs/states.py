"""A job's statuses and the moves between them (procrastinate's shape).

::

    queued ──claim──► running ──complete(succeeded)──► succeeded
      ▲  │              │  ├──complete(cancelled) / cancel of a stale worker──► cancelled
      │  └─cancel──► cancelled   ├──complete(failed) / worker lost / start error / no progress,
      │                          │    attempts left──► queued (+backoff)
      │                          └──the same, no attempts left──► failed
      └────────────retry (failed | cancelled)──────────────┘

The one place the five names are spelled: the table's CHECK constraint
(:mod:`service.models`), the API's schemas, the dashboard and the HTTP client all take them
from here. This module imports nothing of the service, so any of those may import it.
"""

from __future__ import annotations

import enum
from typing import Literal, get_args


class JobStatus(enum.StrEnum):
    """A job's ``status``. A member equals its string, so stored values and JSON are the
    plain names."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses a job leaves only when a person retries it.
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# Literals of the statuses' strings, not the enum, for the API's schemas: the OpenAPI schema stays
# an inline enum of strings (an enum-typed field would become a reference to a named schema).
# Spelled out for the type checker; the check below keeps them equal to JobStatus, in its order.
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["search", "retrain", "profile", "sweep"]
Outcome = Literal["succeeded", "failed", "cancelled"]
if get_args(StatusName) != tuple(s.value for s in JobStatus) or get_args(Outcome) != tuple(
    s.value for s in JobStatus if s in TERMINAL
):
    raise RuntimeError("service.jobs.states: StatusName/Outcome differ from JobStatus")

#: ``{from: {to, ...}}``: every move a job may make (the diagram above).
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED}),
}

#: Terminal statuses a person may retry (back to ``queued``).
RETRYABLE = frozenset(s for s in TERMINAL if JobStatus.QUEUED in TRANSITIONS[s])


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def transition(frm: str, to: str) -> JobStatus:
    """``to``, when a job may move there from ``frm``; a move the table does not allow is a
    bug in the caller (never a client's 409), so it raises :class:`ValueError`."""
    if JobStatus(to) not in TRANSITIONS[JobStatus(frm)]:
        raise ValueError(f"no transition {frm} → {to}")
    return JobStatus(to)


def as_constants() -> dict[str, list[str]]:
    """The statuses as plain lists, for the dashboard's pages."""
    return {
        "statuses": [s.value for s in JobStatus],
        "terminal": [s.value for s in JobStatus if s in TERMINAL],
        "retryable": [s.value for s in JobStatus if s in RETRYABLE],
    }

"""The worker's side of a running job: the events it reports, its heartbeat, and its final
word on the attempt."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Table, bindparam, select, update
from sqlalchemy.orm import Session

from .. import results
from ..errors import Conflict, NotFound
from ..models import Job, JobEvent, utcnow
from ..retry import RetryPolicy
from ..schemas import CompleteIn, EventIn
from ..signals import event_logs_locked, mark_events
from ..watchdog import record_steps
from .states import JobStatus
from .transitions import (
    conflict,
    end_attempt,
    end_attempt_failed,
    status_event,
    truncate,
    update_running,
)

__all__ = ["complete", "heartbeat", "ingest_events"]

#: Event types whose latest data is mirrored into ``job.progress``.
PROGRESS_TYPES = ("step", "epoch")
RUNNING = JobStatus.RUNNING


def _worker_job(session: Session, job_id: int, for_update: bool = False) -> Job:
    job = session.get(Job, job_id, populate_existing=True, with_for_update=for_update)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def ingest_events(
    session: Session, job_id: int, events: Sequence[EventIn], now: datetime | None = None
) -> tuple[int, int, bool]:
    """Store a batch → (accepted, duplicates, cancel_requested); also a heartbeat.

    ``INSERT ... ON CONFLICT (job_id, seq) DO NOTHING`` on both dialects: a re-sent seq is
    counted as a duplicate, never stored twice, and never an error.
    """
    now = now or utcnow()
    conn = session.connection()
    # read with the row lock that orders this job's events (signals.lock_event_logs): only
    # the columns the batch needs, one compiled Core statement (the hot path of the workers)
    row = conn.execute(_READ_FOR_EVENTS, {"job_id": job_id}).first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    event_logs_locked(session, (job_id,))
    status, attempt, cancel_requested, stored_progress = row
    if status != RUNNING:
        raise Conflict(f"job {job_id} is {status}; cannot accept events", current_state=status)
    accepted = 0
    values: dict[str, Any] = {"heartbeat_at": now}
    if events:
        rows = [
            {"job_id": job_id, "seq": e.seq, "type": e.type, "data": e.data, "created_at": now}
            for e in events
        ]
        # executemany of one cached statement: SQLAlchemy sends it as one multi-row INSERT
        # ("insertmanyvalues") without compiling a new statement for every batch size.
        inserted = conn.execute(_insert_events(session), rows).all()
        accepted = len(inserted)
        if accepted:
            mark_events(session, (job_id,))
        kept = {(s, t) for s, t in inserted}
        progress = dict(stored_progress or {})
        changed = False
        for e in events:  # the last accepted event of each progress type wins
            if e.type in PROGRESS_TYPES and (e.seq, e.type) in kept:
                progress[e.type] = e.data
                changed = True
        # the watchdog's step clock: a re-sent step (a resumed attempt) is progress too
        steps = [e.data for e in events if e.type == "step"]
        if steps:
            record_steps(progress, attempt, steps, now)
            changed = True
        if changed:
            progress["updated_at"] = now.isoformat()
            values["progress"] = progress
    conn.execute(_UPDATE_RUNNING.values(**values), {"job_id": job_id})
    session.commit()
    return accepted, len(events) - accepted, bool(cancel_requested)


_JOBS = cast(Table, Job.__table__)
_READ_FOR_EVENTS = (
    select(_JOBS.c.status, _JOBS.c.attempt, _JOBS.c.cancel_requested, _JOBS.c.progress)
    .where(_JOBS.c.id == bindparam("job_id"))
    .with_for_update()
)
_UPDATE_RUNNING = update(_JOBS).where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.status == RUNNING)
#: A heartbeat within this many seconds of the stored one is not written again: the stored
#: time is what the reaper compares with ``heartbeat_timeout_s`` (60 s), so a worker's second
#: path (events refresh it too; a job actor and its rank 0 both beat) costs one read, no write.
HEARTBEAT_COALESCE_S = 5.0


_INSERT_EVENTS: dict[str, Any] = {}


def _insert_events(session: Session):
    """``INSERT INTO job_events ... ON CONFLICT (job_id, seq) DO NOTHING RETURNING seq, type``
    for the session's dialect, built once."""
    name = session.get_bind().dialect.name
    stmt = _INSERT_EVENTS.get(name)
    if stmt is None:
        table = cast(Table, JobEvent.__table__)  # typed FromClause; a declarative class's Table
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            ins: Insert = pg_insert(table).on_conflict_do_nothing(index_elements=["job_id", "seq"])
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            ins = sqlite_insert(table).on_conflict_do_nothing(index_elements=["job_id", "seq"])
        else:  # pragma: no cover - unsupported dialects
            raise NotImplementedError(name)
        stmt = _INSERT_EVENTS[name] = ins.returning(table.c.seq, table.c.type)
    return stmt


def heartbeat(session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Refresh liveness; the answer tells a worker to stop when the job no longer runs."""
    now = now or utcnow()
    job = _worker_job(session, job_id)
    beat = job.heartbeat_at
    if job.status == RUNNING and (
        beat is None or (now - beat).total_seconds() >= HEARTBEAT_COALESCE_S
    ):
        update_running(session, job_id, heartbeat_at=now)
        session.commit()
        session.refresh(job)
    return job


def complete(
    session: Session,
    job_id: int,
    body: CompleteIn,
    policy: RetryPolicy,
    now: datetime | None = None,
) -> Job:
    """The worker's final word on this attempt. Only a running job completes; a second
    ``complete`` (or one after the job was reaped) is a 409 carrying the current state."""
    now = now or utcnow()
    job = _worker_job(session, job_id)
    if job.status != RUNNING:
        raise conflict(job, "complete")
    if body.outcome == JobStatus.SUCCEEDED:
        result = results.ingest(session, job, body.result or {}, now)
        end_attempt(
            session,
            job,
            "complete",
            now,
            status=JobStatus.SUCCEEDED,
            finished_at=now,
            heartbeat_at=now,
            result=result,
            error=None,
        )
        status_event(session, job, RUNNING, JobStatus.SUCCEEDED, now)
    elif body.outcome == JobStatus.CANCELLED or job.cancel_requested:
        # Stopping on request can surface as an error in the worker; it is still a cancel.
        why = (
            {"reason": "stopped by worker"}
            if body.outcome == JobStatus.CANCELLED
            else {"reason": "failed after a cancel request", "error": truncate(body.error)}
        )
        end_attempt(
            session,
            job,
            "complete",
            now,
            status=JobStatus.CANCELLED,
            finished_at=now,
            heartbeat_at=now,
            error=truncate(body.error),
        )
        status_event(session, job, RUNNING, JobStatus.CANCELLED, now, **why)
    else:
        end_attempt_failed(
            session, job, body.error or "worker reported failure", policy, now, body.traceback_tail
        )
    session.commit()
    return job

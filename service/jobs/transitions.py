"""How a job moves: the guarded ``UPDATE``, the event it writes, the end of an attempt, and the
moves a person asks for (cancel, retry).

Every transition is one guarded ``UPDATE jobs ... WHERE id = :id AND status = :expected``; when
the guard matches no row somebody else moved the job first, and :class:`~service.errors.Conflict`
reports the state it is in now (HTTP 409). A move that :data:`~.states.TRANSITIONS` does not
allow is refused before any SQL. Each transition and each reported progress event writes a
``job_events`` row in the same transaction, so the event log is the job's history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from workers.payload import tail

from .. import sweeps
from ..auth import Principal
from ..errors import Conflict, NotFound
from ..models import Job, JobEvent, utcnow
from ..retry import RetryPolicy
from ..tokens import revoke_job_tokens
from .queries import visible_job
from .states import RETRYABLE, TERMINAL, JobStatus, transition

__all__ = ["cancel", "retry"]

MAX_ERROR_CHARS = 20_000


def add_event(
    session: Session, job_id: int, type_: str, data: dict[str, Any], now: datetime
) -> None:
    session.add(JobEvent(job_id=job_id, seq=None, type=type_, data=data, created_at=now))


def status_event(
    session: Session, job: Job, frm: str | None, to: str, now: datetime, **data: Any
) -> None:
    add_event(
        session, job.id, "status", {"from": frm, "to": to, "attempt": job.attempt, **data}, now
    )
    if job.parent_id is not None:  # a sweep's trial: its sweep's stream says so too
        sweeps.mirror(session, job, to, now, data)
    if job.kind == "sweep" and to in TERMINAL:
        sweeps.cancel_queued_trials(session, job, now)


def truncate(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS] + "\n… (truncated)"


def conflict(job: Job, action: str) -> Conflict:
    return Conflict(f"job {job.id} is {job.status}; cannot {action}", current_state=job.status)


def guarded(
    session: Session, job: Job, expect: str, action: str, now: datetime, **values: Any
) -> None:
    """``UPDATE jobs SET values WHERE id = job.id AND status = expect`` or raise 409."""
    if "status" in values:
        values["status"] = transition(expect, values["status"])
    res = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == expect)
        .values(**values, updated_at=now)
        .returning(Job.id),
        execution_options={"synchronize_session": False},
    )
    if res.first() is None:
        session.rollback()
        current = session.get(Job, job.id, populate_existing=True)
        if current is None:
            raise NotFound(f"job {job.id} not found")
        raise conflict(current, action)
    session.flush()
    session.refresh(job)


def update_running(session: Session, job_id: int, **values: Any) -> None:
    """Set ``values`` on a job while it runs (no move: heartbeats, progress)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING).values(**values),
        execution_options={"synchronize_session": False},
    )


def end_attempt(session: Session, job: Job, action: str, now: datetime, **values: Any) -> None:
    """Move a running job out of ``running``: its attempt is over, so the attempt's worker
    token stops working with it (a late or zombie worker gets 401)."""
    guarded(session, job, JobStatus.RUNNING, action, now, **values)
    revoke_job_tokens(session, job.id, now)
    if job.kind == "sweep":
        sweeps.end_running_trials(session, job, now)


def _attempt_failed(
    session: Session, job: Job, error: str, traceback_tail: str | None, now: datetime
) -> list[dict[str, Any]]:
    """Write the ``error`` event of the job's current attempt → its ``attempt_errors`` with
    this attempt appended (the caller stores them with the transition)."""
    entry = {
        "attempt": job.attempt,
        "error": error,
        "traceback_tail": tail(traceback_tail),
        "at": now.isoformat(),
    }
    add_event(session, job.id, "error", entry, now)
    return [*(job.attempt_errors or []), entry]


def end_attempt_failed(
    session: Session,
    job: Job,
    error: str,
    policy: RetryPolicy,
    now: datetime,
    traceback_tail: str | None = None,
) -> None:
    """A failed attempt: queued again (with backoff) while attempts remain, else failed. The
    error and traceback tail go to the job's ``attempt_errors``, an ``error`` event and the
    transition's ``status`` event, so each retry says why it happened."""
    error = truncate(error) or "failed"
    attempt = job.attempt
    errors = _attempt_failed(session, job, error, traceback_tail, now)
    if policy.should_retry(attempt, job.max_attempts):
        delay = policy.delay_s(attempt)
        end_attempt(
            session,
            job,
            "retry",
            now,
            status=JobStatus.QUEUED,
            attempt=attempt + 1,
            scheduled_at=policy.next_run(attempt, now),
            started_at=None,
            heartbeat_at=None,
            claimed_by=None,
            error=f"attempt {attempt}: {error}",
            attempt_errors=errors,
        )
        status_event(
            session,
            job,
            JobStatus.RUNNING,
            JobStatus.QUEUED,
            now,
            reason="retrying",
            failed_attempt=attempt,
            error=error,
            retry_in_s=delay,
        )
    else:
        end_attempt(
            session,
            job,
            "fail",
            now,
            status=JobStatus.FAILED,
            finished_at=now,
            error=error,
            attempt_errors=errors,
        )
        status_event(
            session,
            job,
            JobStatus.RUNNING,
            JobStatus.FAILED,
            now,
            failed_attempt=attempt,
            error=error,
        )


def end_running(
    session: Session, job: Job, reason: str, policy: RetryPolicy, now: datetime
) -> None:
    """End a running job's attempt from outside it (its worker is gone, never started, or
    stalled): cancelled if a cancel was pending, else as a failed attempt."""
    if job.cancel_requested:
        end_attempt(
            session,
            job,
            "cancel",
            now,
            status=JobStatus.CANCELLED,
            finished_at=now,
            error=truncate(reason),
        )
        status_event(
            session, job, JobStatus.RUNNING, JobStatus.CANCELLED, now, reason=truncate(reason)
        )
    else:
        end_attempt_failed(session, job, reason, policy, now)


# -- user transitions ------------------------------------------------------------------------


def cancel(session: Session, principal: Principal, job_id: int, now: datetime | None = None) -> Job:
    """queued → cancelled now; running → cancel_requested (the worker stops and reports)."""
    now = now or utcnow()
    job = visible_job(session, principal, job_id)
    if job.status == JobStatus.QUEUED:
        guarded(
            session,
            job,
            JobStatus.QUEUED,
            "cancel",
            now,
            status=JobStatus.CANCELLED,
            finished_at=now,
            cancel_requested=True,
        )
        status_event(
            session,
            job,
            JobStatus.QUEUED,
            JobStatus.CANCELLED,
            now,
            reason="cancelled by user",
            by=principal.name,
        )
    elif job.status == JobStatus.RUNNING:
        if not job.cancel_requested:
            guarded(session, job, JobStatus.RUNNING, "cancel", now, cancel_requested=True)
            add_event(session, job.id, "cancel_requested", {"by": principal.name}, now)
        if job.kind == "sweep":
            sweeps.request_cancel_trials(session, job, now)
    else:
        raise conflict(job, "cancel")
    session.commit()
    return job


def retry(session: Session, principal: Principal, job_id: int, now: datetime | None = None) -> Job:
    """failed | cancelled → queued as the next attempt, runnable now (a person asked for it).

    ``max_attempts`` grows with a manual retry so the new attempt is not its own last chance
    only because earlier ones used the automatic budget up.
    """
    now = now or utcnow()
    job = visible_job(session, principal, job_id)
    if job.status not in RETRYABLE:
        raise conflict(job, "retry")
    if job.parent_id is not None:
        raise Conflict(
            f"job {job.id} is trial {job.trial} of sweep {job.parent_id}: it runs only within "
            f"its sweep; retry the sweep (POST /v1/jobs/{job.parent_id}/retry) to re-run it",
            current_state=job.status,
        )
    frm = job.status
    attempt = job.attempt + 1
    guarded(
        session,
        job,
        frm,
        "retry",
        now,
        status=JobStatus.QUEUED,
        attempt=attempt,
        max_attempts=max(job.max_attempts, attempt),
        scheduled_at=now,
        started_at=None,
        finished_at=None,
        heartbeat_at=None,
        claimed_by=None,
        cancel_requested=False,
        error=None,
        result=None,
    )
    revoke_job_tokens(session, job.id, now)
    status_event(
        session, job, frm, JobStatus.QUEUED, now, reason="retried by user", by=principal.name
    )
    session.commit()
    return job

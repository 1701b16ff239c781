"""The dispatcher's side of the queue: what may run, claiming it, and ending attempts whose
worker is gone, never started, or stopped making progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..models import Job, JobEvent, utcnow
from ..retry import RetryPolicy
from ..signals import event_logs_locked, mark_events
from ..tokens import create_token
from ..watchdog import Watchdog
from .states import JobStatus, transition
from .transitions import conflict, end_running, status_event, update_running

__all__ = [
    "all_running",
    "claim",
    "end_stalled",
    "fail_to_start",
    "lock_claims",
    "runnable",
    "running_attempts",
    "running_specs",
    "running_started_before",
    "stale_running",
    "touch",
    "touch_many",
    "worker_lost",
]

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING
#: ``pg_advisory_xact_lock`` key of the dispatchers' claims ("DNAS" as an integer).
CLAIM_LOCK = 0x444E4153
#: Rows per statement of the bulk updates (well under the drivers' parameter limits).
CHUNK = 5000


def lock_claims(session: Session) -> None:
    """PostgreSQL: wait until no other dispatcher plans a claim, then hold that until this
    transaction ends (the claim's commit). Dispatchers that size their claims by the free
    resources each read what runs and claim what fits: without this, two of them would both
    fill the same free CPUs. SQLite has one writer at a time already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))


def runnable(session: Session, now: datetime, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(id, kind, spec)`` of up to ``limit`` runnable jobs, in claim order (no lock: the
    claim re-checks each row)."""
    return [
        (int(i), k, dict(sp or {}))
        for i, k, sp in session.execute(
            select(Job.id, Job.kind, Job.spec)
            .where(Job.status == QUEUED, Job.scheduled_at <= now, Job.parent_id.is_(None))
            .order_by(Job.priority.desc(), Job.scheduled_at, Job.id)
            .limit(limit)
        )
    ]


def running_specs(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, spec)`` of every running job (what they hold on the cluster); a sweep's
    trials are in what their sweep holds."""
    return [
        (k, dict(sp or {}))
        for k, sp in session.execute(
            select(Job.kind, Job.spec).where(Job.status == RUNNING, Job.parent_id.is_(None))
        )
    ]


def claim(
    session: Session,
    worker: str,
    limit: int,
    now: datetime | None = None,
    ids: Sequence[int] | None = None,
) -> list[tuple[Job, str]]:
    """Claim up to ``limit`` runnable jobs → [(job, job token)], in one transaction.

    PostgreSQL: the candidates are locked with ``FOR UPDATE SKIP LOCKED`` in a materialized CTE,
    so concurrent dispatchers each get different rows and never wait on each other. SQLite has
    one writer at a time: the single ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) AND
    status = 'queued'`` takes the write lock before reading, so two claimers serialize and the
    second sees the first one's rows as running. Both return the claimed ids. ``ids``
    restricts the claim to those jobs (the ones that fit the cluster now: service.capacity).
    """
    now = now or utcnow()
    # A sweep's trials are started by their sweep (service.sweeps), never claimed here.
    where = [Job.status == QUEUED, Job.scheduled_at <= now, Job.parent_id.is_(None)]
    if ids is not None:
        if not ids:
            return []
        where.append(Job.id.in_(list(ids)))
    candidates = (
        select(Job.id)
        .where(*where)
        .order_by(Job.priority.desc(), Job.scheduled_at, Job.id)
        .limit(limit)
    )
    values = dict(
        status=transition(QUEUED, RUNNING),
        claimed_by=worker,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        cancel_requested=False,
        updated_at=now,
    )
    if session.get_bind().dialect.name == "postgresql":
        cte = (
            candidates.with_for_update(skip_locked=True).cte("to_claim").prefix_with("MATERIALIZED")
        )
        stmt = update(Job).where(Job.id.in_(select(cte.c.id)), Job.status == QUEUED)
    else:
        stmt = update(Job).where(Job.id.in_(candidates.scalar_subquery()), Job.status == QUEUED)
    ids = list(
        session.scalars(
            stmt.values(**values).returning(Job.id),
            execution_options={"synchronize_session": False},
        )
    )
    if not ids:
        session.commit()
        return []
    jobs = list(
        session.scalars(
            select(Job)
            .where(Job.id.in_(ids))
            .order_by(Job.priority.desc(), Job.scheduled_at, Job.id)
            .execution_options(populate_existing=True)
        )
    )
    out = []
    for job in jobs:
        token = create_token(
            session, f"job-{job.id}-attempt-{job.attempt}", job.project, job_id=job.id
        )
        status_event(session, job, QUEUED, RUNNING, now, worker=worker)
        out.append((job, token))
    session.commit()
    return out


def fail_to_start(
    session: Session, job_id: int, error: str, policy: RetryPolicy, now: datetime | None = None
) -> Job:
    """``executor.start`` raised: the attempt ends like any failed one — retried while attempts
    remain, failed after that (cancelled if a cancel was pending)."""
    return worker_lost(session, job_id, policy, f"executor failed to start the job: {error}", now)


def worker_lost(
    session: Session, job_id: int, policy: RetryPolicy, reason: str, now: datetime | None = None
) -> Job:
    """A running job whose worker is gone (or never started): cancelled if a cancel was
    pending, else retried while attempts remain, else failed with ``reason``."""
    now = now or utcnow()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.status != RUNNING:
        raise conflict(job, "mark lost")
    end_running(session, job, reason, policy, now)
    session.commit()
    return job


def end_stalled(
    session: Session,
    job_id: int,
    attempt: int,
    watchdog: Watchdog,
    policy: RetryPolicy,
    now: datetime | None = None,
) -> str | None:
    """End ``attempt`` of a running job the progress watchdog finds stuck, judged again on the
    row as it is now (a step may have arrived since the dispatcher looked) → the reason, or
    None when it is not stuck (any more) or that attempt is over. Ends like a lost worker."""
    now = now or utcnow()
    job = session.get(Job, job_id, populate_existing=True)
    reason = None
    if job is not None and job.status == RUNNING and job.attempt == attempt:
        reason = watchdog.stall(job.attempt, job.started_at, job.heartbeat_at, job.progress, now)
    if reason is None or job is None:  # job is None: so is reason
        session.rollback()
        return None
    end_running(session, job, reason, policy, now)
    session.commit()
    return reason


def touch(session: Session, job_id: int, now: datetime | None = None) -> None:
    """Refresh a running job's heartbeat (the executor vouched for a silent worker)."""
    update_running(session, job_id, heartbeat_at=now or utcnow())
    session.commit()


def touch_many(
    session: Session,
    job_ids: Sequence[int],
    now: datetime | None = None,
    event: dict[str, Any] | None = None,
) -> list[int]:
    """Refresh the heartbeat of the jobs among ``job_ids`` that still run (the executor
    vouched for their workers), with a ``reattached`` event each carrying ``event`` when given
    (a restarted dispatcher found them) → those ids. One statement per :data:`CHUNK` jobs,
    each chunk its own transaction (a restart with 10,000 running jobs takes seconds)."""
    now = now or utcnow()
    out: list[int] = []
    ids = sorted(set(job_ids))
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        kept = list(
            session.scalars(
                update(Job)
                .where(Job.id.in_(chunk), Job.status == RUNNING)
                .values(heartbeat_at=now)
                .returning(Job.id),
                execution_options={"synchronize_session": False},
            )
        )
        if kept and event is not None:
            event_logs_locked(session, kept)  # the UPDATE holds their row locks
            session.execute(
                insert(JobEvent),
                [
                    {
                        "job_id": j,
                        "seq": None,
                        "type": "reattached",
                        "data": event,
                        "created_at": now,
                    }
                    for j in sorted(kept)
                ],
            )
            mark_events(session, kept)
        session.commit()
        out += kept
    return out


def stale_running(session: Session, cutoff: datetime) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.status == RUNNING, Job.heartbeat_at < cutoff).order_by(Job.id)
        )
    )


def running_attempts(session: Session) -> dict[int, int]:
    """``{job id: attempt}`` of every running job (what the executor's sweep may keep)."""
    return {
        int(i): int(a)
        for i, a in session.execute(select(Job.id, Job.attempt).where(Job.status == RUNNING))
    }


def all_running(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == RUNNING).order_by(Job.id)))


def running_started_before(session: Session, cutoff: datetime) -> list[Any]:
    """The progress watchdog's one read per tick: ``(id, attempt, started_at, heartbeat_at,
    progress)`` of each job running since before ``cutoff``."""
    return list(
        session.execute(
            select(Job.id, Job.attempt, Job.started_at, Job.heartbeat_at, Job.progress)
            # a sweep reports no steps of its own: its trials are watched, each a search
            .where(Job.status == RUNNING, Job.started_at < cutoff, Job.kind != "sweep")
            .order_by(Job.id)
        )
    )

"""The job state machine (procrastinate's shape) and the queries around it.

::

    queued ──claim──► running ──complete(succeeded)──► succeeded
      ▲  │              │  ├──complete(cancelled) / cancel of a stale worker──► cancelled
      │  └─cancel──► cancelled   ├──complete(failed) / worker lost / start error / no progress,
      │                          │    attempts left──► queued (+backoff)
      │                          └──the same, no attempts left──► failed
      └────────────retry (failed | cancelled)──────────────┘

Every transition is one guarded ``UPDATE jobs ... WHERE id = :id AND status = :expected``; when
the guard matches no row somebody else moved the job first, and :class:`~service.errors.Conflict`
reports the state it is in now (HTTP 409). Each transition and each reported progress event
writes a ``job_events`` row in the same transaction, so the event log is the job's history.

Functions here are units of work: they commit on success and leave the session clean on error.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String, and_, bindparam, func, literal, or_, select, union_all, update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from workers.payload import tail

from . import results
from .auth import Principal
from .errors import Conflict, Forbidden, Invalid, NotFound
from .models import (
    TERMINAL_STATUSES, Architecture, Job, JobEvent, LatencyTable, utcnow,
)
from .pagination import Cursor, after
from .reads import Reader
from .retry import RetryPolicy
from .schemas import CompleteIn, EventIn, JobPublic, Produced
from .signals import event_logs_locked, mark_events
from .tokens import create_token, revoke_job_tokens
from .watchdog import Watchdog, record_steps

log = logging.getLogger(__name__)

SORTS = {"created_at": ("created_at", False), "-created_at": ("created_at", True),
         "priority": ("priority", False), "-priority": ("priority", True)}
MAX_ERROR_CHARS = 20_000
#: Event types whose latest data is mirrored into ``job.progress``.
PROGRESS_TYPES = ("step", "epoch")


# -- helpers ---------------------------------------------------------------------------------

def _add_event(session: Session, job_id: int, type_: str, data: dict[str, Any],
               now: datetime) -> None:
    session.add(JobEvent(job_id=job_id, seq=None, type=type_, data=data, created_at=now))


def _status_event(session: Session, job: Job, frm: str | None, to: str, now: datetime,
                  **data: Any) -> None:
    _add_event(session, job.id, "status",
               {"from": frm, "to": to, "attempt": job.attempt, **data}, now)


def _truncate(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS] + "\n… (truncated)"


def _conflict(job: Job, action: str) -> Conflict:
    return Conflict(f"job {job.id} is {job.status}; cannot {action}", current_state=job.status)


def _guarded(session: Session, job: Job, expect: str, action: str, now: datetime,
             **values: Any) -> None:
    """``UPDATE jobs SET values WHERE id = job.id AND status = expect`` or raise 409."""
    res = session.execute(
        update(Job).where(Job.id == job.id, Job.status == expect)
        .values(**values, updated_at=now).returning(Job.id),
        execution_options={"synchronize_session": False})
    if res.first() is None:
        session.rollback()
        current = session.get(Job, job.id, populate_existing=True)
        if current is None:
            raise NotFound(f"job {job.id} not found")
        raise _conflict(current, action)
    session.flush()
    session.refresh(job)


def _end_attempt(session: Session, job: Job, action: str, now: datetime,
                 **values: Any) -> None:
    """Move a running job out of ``running``: its attempt is over, so the attempt's worker
    token stops working with it (a late or zombie worker gets 401)."""
    _guarded(session, job, "running", action, now, **values)
    revoke_job_tokens(session, job.id, now)


def _attempt_failed(session: Session, job: Job, error: str, traceback_tail: str | None,
                    now: datetime) -> list[dict[str, Any]]:
    """Write the ``error`` event of the job's current attempt → its ``attempt_errors`` with
    this attempt appended (the caller stores them with the transition)."""
    entry = {"attempt": job.attempt, "error": error, "traceback_tail": tail(traceback_tail),
             "at": now.isoformat()}
    _add_event(session, job.id, "error", entry, now)
    return [*(job.attempt_errors or []), entry]


def visible_job(session: Session, principal: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.project):
        raise NotFound(f"job {job_id} not found")
    return job


def _extras_query(job_id):
    one = isinstance(job_id, BindParameter)

    def of(col):
        return col == job_id if one else col.in_(job_id)

    q = union_all(
        select(literal(0).label("what"), Architecture.job_id, Architecture.id)
        .where(of(Architecture.job_id)),
        select(literal(1).label("what"), LatencyTable.job_id, LatencyTable.id)
        .where(of(LatencyTable.job_id)),
        select(literal(2).label("what"), JobEvent.job_id, func.max(JobEvent.id))
        .where(of(JobEvent.job_id)).group_by(JobEvent.job_id))
    return q.order_by(q.selected_columns[0], q.selected_columns[2])


# Built once: a statement object memoizes its cache key, so the ORM routes' read of one job
# does not rebuild and re-key the query every time.
_EXTRAS_ONE = _extras_query(bindparam("job_id"))


@dataclass
class JobExtras:
    """What a job page shows beside the row: what it produced, and its latest event id (the
    ``Last-Event-ID`` from which to follow only what comes next)."""
    produced: Produced
    last_event_id: int | None = None


def job_extras(session: Session, job_ids: Sequence[int]) -> dict[int, JobExtras]:
    """:class:`JobExtras` of each job, in one query."""
    out = {i: JobExtras(Produced()) for i in job_ids}
    if not job_ids:
        return out
    if len(out) == 1:
        rows = session.execute(_EXTRAS_ONE, {"job_id": next(iter(out))})
    else:
        rows = session.execute(_extras_query(list(out)))
    for what, jid, rid in rows:
        if what == 2:
            out[jid].last_event_id = rid
        else:
            (out[jid].produced.latency_tables if what else out[jid].produced.architectures
             ).append(rid)
    return out


class _id_list(FunctionElement):
    """Comma-separated ids of an aggregate (``string_agg`` / ``group_concat``)."""
    type = String()
    inherit_cache = True
    name = "id_list"


@compiles(_id_list, "postgresql")
def _id_list_pg(element, compiler, **kw):
    return f"string_agg(CAST({compiler.process(element.clauses, **kw)} AS VARCHAR), ',')"


@compiles(_id_list)
def _id_list_default(element, compiler, **kw):
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


def _ids_of(table) -> Any:
    return (select(_id_list(table.c.id)).where(table.c.job_id == Job.id)
            .scalar_subquery())


# One round trip for the job page: the columns JobPublic shows (not claimed_by,
# idempotency_key, created_by) and the JobExtras.
_JOB_DOC = select(
    *[Job.__table__.c[name] for name in JobPublic.model_fields
      if name not in JobExtras.__dataclass_fields__],
    _ids_of(Architecture.__table__).label("architecture_ids"),
    _ids_of(LatencyTable.__table__).label("latency_table_ids"),
    select(func.max(JobEvent.id)).where(JobEvent.job_id == Job.id).scalar_subquery()
    .label("last_event_id"),
).where(Job.id == bindparam("job_id"))


def _parse_ids(text: str | None) -> list[int]:
    return sorted(int(x) for x in text.split(",")) if text else []


async def job_json(reader: Reader, principal: Principal, job_id: int) -> str:
    """``GET /v1/jobs/{id}`` as JSON, from one Core read (the hot path: :mod:`service.reads`).
    The same document as the ORM route's :class:`JobPublic` (a test compares them)."""
    row = await reader.one(_JOB_DOC, {"job_id": job_id})
    if row is None or not principal.can_see(row["project"]):
        raise NotFound(f"job {job_id} not found")
    row["produced"] = Produced(architectures=_parse_ids(row.pop("architecture_ids")),
                               latency_tables=_parse_ids(row.pop("latency_table_ids")))
    return JobPublic.model_validate(row).model_dump_json()


# -- create ----------------------------------------------------------------------------------

def _request_fingerprint(kind: str, spec: dict[str, Any], priority: int) -> str:
    raw = json.dumps({"kind": kind, "spec": spec, "priority": priority}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_references(session: Session, kind: str, spec: dict[str, Any], project: str) -> None:
    """Ids inside a spec must name rows of the job's project (422 naming the field)."""
    if kind == "retrain":
        arch = session.get(Architecture, spec["architecture_id"])
        if arch is None or arch.project != project:
            raise Invalid.field("spec.architecture_id",
                                f"architecture {spec['architecture_id']} not found in project "
                                f"{project!r}")
    table_id = (spec.get("cost") or {}).get("latency_table_id") if kind == "search" else None
    if table_id is not None:
        table = session.get(LatencyTable, table_id)
        if table is None or table.project != project:
            raise Invalid.field("spec.cost.latency_table_id",
                                f"latency table {table_id} not found in project {project!r}")


def create_job(session: Session, principal: Principal, body: Any, *, default_max_attempts: int,
               idempotency_key: str | None = None, now: datetime | None = None
               ) -> tuple[Job, bool]:
    """Queue a job → (job, created). The same Idempotency-Key in a project returns the job it
    created the first time (created=False), provided the request is the same."""
    now = now or utcnow()
    project = body.project or principal.project
    if project != principal.project and not principal.is_admin:
        raise Forbidden("only admins can create jobs in another project")
    spec = body.spec.model_dump(mode="json")
    fingerprint = _request_fingerprint(body.kind, spec, body.priority)
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise Invalid.field("Idempotency-Key", "must be 1 to 200 characters")
        existing = _by_idempotency_key(session, project, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint, idempotency_key), False
    _check_references(session, body.kind, spec, project)
    job = Job(kind=body.kind, status="queued", project=project, priority=body.priority,
              spec=spec, attempt=1, max_attempts=body.max_attempts or default_max_attempts,
              scheduled_at=now, idempotency_key=idempotency_key,
              architecture_id=spec.get("architecture_id") if body.kind == "retrain" else None,
              latency_table_id=(spec.get("cost") or {}).get("latency_table_id")
              if body.kind == "search" else None,
              created_by=principal.token_id, created_at=now, updated_at=now,
              progress=None, result=None)
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with the same Idempotency-Key: the other request's job is the answer.
        session.rollback()
        existing = _by_idempotency_key(session, project, idempotency_key) \
            if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, fingerprint, idempotency_key), False
    _status_event(session, job, None, "queued", now, reason="created")
    session.commit()
    return job, True


def _by_idempotency_key(session: Session, project: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.project == project, Job.idempotency_key == key))


def _replay(job: Job, fingerprint: str, key: str | None) -> Job:
    if _request_fingerprint(job.kind, job.spec, job.priority) != fingerprint:
        raise Conflict(f"Idempotency-Key {key!r} was already used for job {job.id} with a "
                       "different request", current_state=job.status, job_id=job.id)
    return job


# -- read ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobFilters:
    status: Sequence[str] = ()
    kind: Sequence[str] = ()
    project: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_jobs(session: Session, principal: Principal, filters: JobFilters, *, sort: str,
              limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
    if sort not in SORTS:
        raise Invalid.field("sort", f"unknown sort {sort!r} (one of {', '.join(SORTS)})")
    column_name, descending = SORTS[sort]
    column = getattr(Job, column_name)
    q = select(Job)
    if filters.project is not None:
        if not principal.can_see(filters.project):
            raise Forbidden("only admins can list other projects' jobs")
        q = q.where(Job.project == filters.project)
    elif not principal.is_admin:
        q = q.where(Job.project == principal.project)
    if filters.status:
        q = q.where(Job.status.in_(filters.status))
    if filters.kind:
        q = q.where(Job.kind.in_(filters.kind))
    if filters.created_after is not None:
        q = q.where(Job.created_at > filters.created_after)
    if filters.created_before is not None:
        q = q.where(Job.created_at < filters.created_before)
    if cursor:
        c = Cursor.decode(cursor, sort, datetime if column_name == "created_at" else int)
        q = q.where(after(column, Job.id, c, descending))
    order = (column.desc(), Job.id.desc()) if descending else (column.asc(), Job.id.asc())
    rows = list(session.scalars(q.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = Cursor(sort, getattr(last, column_name), last.id).encode()
    return rows, next_cursor


def job_counts(session: Session, principal: Principal) -> dict[str, int]:
    q = select(Job.status, func.count()).group_by(Job.status)
    if not principal.is_admin:
        q = q.where(Job.project == principal.project)
    counts = {s: 0 for s in ("queued", "running", "succeeded", "failed", "cancelled")}
    counts.update({status: n for status, n in session.execute(q)})
    return counts


def list_events(session: Session, job_id: int, after_id: int, limit: int) -> list[JobEvent]:
    return list_events_of(session, {job_id: after_id}, limit)


def list_events_of(session: Session, after: dict[int, int], limit: int) -> list[JobEvent]:
    """Events of several jobs, each after its own id, in id order (one index range each)."""
    if not after:
        return []
    return list(session.scalars(
        select(JobEvent).where(or_(*(and_(JobEvent.job_id == j, JobEvent.id > a)
                                     for j, a in after.items())))
        .order_by(JobEvent.id).limit(limit)))


def statuses_of(session: Session, job_ids: Sequence[int]) -> dict[int, str]:
    """Current status of each existing job (a deleted job is absent)."""
    return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())


# -- user transitions ------------------------------------------------------------------------

def cancel(session: Session, principal: Principal, job_id: int,
           now: datetime | None = None) -> Job:
    """queued → cancelled now; running → cancel_requested (the worker stops and reports)."""
    now = now or utcnow()
    job = visible_job(session, principal, job_id)
    if job.status == "queued":
        _guarded(session, job, "queued", "cancel", now, status="cancelled", finished_at=now,
                 cancel_requested=True)
        _status_event(session, job, "queued", "cancelled", now, reason="cancelled by user",
                      by=principal.name)
    elif job.status == "running":
        if not job.cancel_requested:
            _guarded(session, job, "running", "cancel", now, cancel_requested=True)
            _add_event(session, job.id, "cancel_requested", {"by": principal.name}, now)
    else:
        raise _conflict(job, "cancel")
    session.commit()
    return job


def retry(session: Session, principal: Principal, job_id: int,
          now: datetime | None = None) -> Job:
    """failed | cancelled → queued as the next attempt, runnable now (a person asked for it).

    ``max_attempts`` grows with a manual retry so the new attempt is not its own last chance
    only because earlier ones used the automatic budget up.
    """
    now = now or utcnow()
    job = visible_job(session, principal, job_id)
    if job.status not in ("failed", "cancelled"):
        raise _conflict(job, "retry")
    frm = job.status
    attempt = job.attempt + 1
    _guarded(session, job, frm, "retry", now, status="queued", attempt=attempt,
             max_attempts=max(job.max_attempts, attempt), scheduled_at=now, started_at=None,
             finished_at=None, heartbeat_at=None, claimed_by=None, cancel_requested=False,
             error=None, result=None)
    revoke_job_tokens(session, job.id, now)
    _status_event(session, job, frm, "queued", now, reason="retried by user", by=principal.name)
    session.commit()
    return job


# -- dispatcher transitions ------------------------------------------------------------------

def runnable(session: Session, now: datetime, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(id, kind, spec)`` of up to ``limit`` runnable jobs, in claim order (no lock: the
    claim re-checks each row)."""
    return [(int(i), k, dict(sp or {})) for i, k, sp in session.execute(
        select(Job.id, Job.kind, Job.spec)
        .where(Job.status == "queued", Job.scheduled_at <= now)
        .order_by(Job.priority.desc(), Job.scheduled_at, Job.id).limit(limit))]


def running_specs(session: Session) -> list[tuple[str, dict[str, Any]]]:
    """``(kind, spec)`` of every running job (what they hold on the cluster)."""
    return [(k, dict(sp or {})) for k, sp in session.execute(
        select(Job.kind, Job.spec).where(Job.status == "running"))]


def claim(session: Session, worker: str, limit: int, now: datetime | None = None,
          ids: Sequence[int] | None = None) -> list[tuple[Job, str]]:
    """Claim up to ``limit`` runnable jobs → [(job, job token)], in one transaction.

    PostgreSQL: the candidates are locked with ``FOR UPDATE SKIP LOCKED`` in a materialized CTE,
    so concurrent dispatchers each get different rows and never wait on each other. SQLite has
    one writer at a time: the single ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) AND
    status = 'queued'`` takes the write lock before reading, so two claimers serialize and the
    second sees the first one's rows as running. Both return the claimed ids. ``ids``
    restricts the claim to those jobs (the ones that fit the cluster now: service.capacity).
    """
    now = now or utcnow()
    where = [Job.status == "queued", Job.scheduled_at <= now]
    if ids is not None:
        if not ids:
            return []
        where.append(Job.id.in_(list(ids)))
    candidates = (select(Job.id).where(*where)
                  .order_by(Job.priority.desc(), Job.scheduled_at, Job.id)
                  .limit(limit))
    values = dict(status="running", claimed_by=worker, started_at=now, heartbeat_at=now,
                  finished_at=None, cancel_requested=False, updated_at=now)
    if session.get_bind().dialect.name == "postgresql":
        cte = (candidates.with_for_update(skip_locked=True).cte("to_claim")
               .prefix_with("MATERIALIZED"))
        stmt = update(Job).where(Job.id.in_(select(cte.c.id)), Job.status == "queued")
    else:
        stmt = update(Job).where(Job.id.in_(candidates.scalar_subquery()),
                                 Job.status == "queued")
    ids = list(session.scalars(stmt.values(**values).returning(Job.id),
                               execution_options={"synchronize_session": False}))
    if not ids:
        session.commit()
        return []
    jobs = list(session.scalars(
        select(Job).where(Job.id.in_(ids))
        .order_by(Job.priority.desc(), Job.scheduled_at, Job.id)
        .execution_options(populate_existing=True)))
    out = []
    for job in jobs:
        token = create_token(session, f"job-{job.id}-attempt-{job.attempt}", job.project,
                             job_id=job.id)
        _status_event(session, job, "queued", "running", now, worker=worker)
        out.append((job, token))
    session.commit()
    return out


def fail_to_start(session: Session, job_id: int, error: str, policy: RetryPolicy,
                  now: datetime | None = None) -> Job:
    """``executor.start`` raised: the attempt ends like any failed one — retried while attempts
    remain, failed after that (cancelled if a cancel was pending)."""
    return worker_lost(session, job_id, policy, f"executor failed to start the job: {error}",
                       now)


def worker_lost(session: Session, job_id: int, policy: RetryPolicy, reason: str,
                now: datetime | None = None) -> Job:
    """A running job whose worker is gone (or never started): cancelled if a cancel was
    pending, else retried while attempts remain, else failed with ``reason``."""
    now = now or utcnow()
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.status != "running":
        raise _conflict(job, "mark lost")
    _end_running(session, job, reason, policy, now)
    session.commit()
    return job


def _end_running(session: Session, job: Job, reason: str, policy: RetryPolicy,
                 now: datetime) -> None:
    if job.cancel_requested:
        _end_attempt(session, job, "cancel", now, status="cancelled", finished_at=now,
                     error=_truncate(reason))
        _status_event(session, job, "running", "cancelled", now, reason=_truncate(reason))
    else:
        _end_attempt_failed(session, job, reason, policy, now)


def end_stalled(session: Session, job_id: int, attempt: int, watchdog: Watchdog,
                policy: RetryPolicy, now: datetime | None = None) -> str | None:
    """End ``attempt`` of a running job the progress watchdog finds stuck, judged again on the
    row as it is now (a step may have arrived since the dispatcher looked) → the reason, or
    None when it is not stuck (any more) or that attempt is over. Ends like a lost worker."""
    now = now or utcnow()
    job = session.get(Job, job_id, populate_existing=True)
    reason = None
    if job is not None and job.status == "running" and job.attempt == attempt:
        reason = watchdog.stall(job.attempt, job.started_at, job.heartbeat_at, job.progress,
                                now)
    if reason is None:
        session.rollback()
        return None
    _end_running(session, job, reason, policy, now)
    session.commit()
    return reason


def touch(session: Session, job_id: int, now: datetime | None = None) -> None:
    """Refresh a running job's heartbeat (the executor vouched for a silent worker)."""
    now = now or utcnow()
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                    .values(heartbeat_at=now), execution_options={"synchronize_session": False})
    session.commit()


def stale_running(session: Session, cutoff: datetime) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == "running",
                                                  Job.heartbeat_at < cutoff).order_by(Job.id)))


def running_attempts(session: Session) -> dict[int, int]:
    """``{job id: attempt}`` of every running job (what the executor's sweep may keep)."""
    return {int(i): int(a) for i, a in session.execute(
        select(Job.id, Job.attempt).where(Job.status == "running"))}


def all_running(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.status == "running").order_by(Job.id)))


def running_started_before(session: Session, cutoff: datetime) -> list[Any]:
    """The progress watchdog's one read per tick: ``(id, attempt, started_at, heartbeat_at,
    progress)`` of each job running since before ``cutoff``."""
    return list(session.execute(
        select(Job.id, Job.attempt, Job.started_at, Job.heartbeat_at, Job.progress)
        .where(Job.status == "running", Job.started_at < cutoff).order_by(Job.id)))


def _end_attempt_failed(session: Session, job: Job, error: str, policy: RetryPolicy,
                        now: datetime, traceback_tail: str | None = None) -> None:
    """A failed attempt: queued again (with backoff) while attempts remain, else failed. The
    error and traceback tail go to the job's ``attempt_errors``, an ``error`` event and the
    transition's ``status`` event, so each retry says why it happened."""
    error = _truncate(error) or "failed"
    attempt = job.attempt
    errors = _attempt_failed(session, job, error, traceback_tail, now)
    if policy.should_retry(attempt, job.max_attempts):
        delay = policy.delay_s(attempt)
        _end_attempt(session, job, "retry", now, status="queued", attempt=attempt + 1,
                     scheduled_at=policy.next_run(attempt, now), started_at=None,
                     heartbeat_at=None, claimed_by=None, error=f"attempt {attempt}: {error}",
                     attempt_errors=errors)
        _status_event(session, job, "running", "queued", now, reason="retrying",
                      failed_attempt=attempt, error=error, retry_in_s=delay)
    else:
        _end_attempt(session, job, "fail", now, status="failed", finished_at=now, error=error,
                     attempt_errors=errors)
        _status_event(session, job, "running", "failed", now, failed_attempt=attempt,
                      error=error)


# -- worker protocol -------------------------------------------------------------------------

def _worker_job(session: Session, job_id: int, for_update: bool = False) -> Job:
    job = session.get(Job, job_id, populate_existing=True, with_for_update=for_update)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def ingest_events(session: Session, job_id: int, events: Sequence[EventIn],
                  now: datetime | None = None) -> tuple[int, int, bool]:
    """Store a batch → (accepted, duplicates, cancel_requested); also a heartbeat.

    ``INSERT ... ON CONFLICT (job_id, seq) DO NOTHING`` on both dialects: a re-sent seq is
    counted as a duplicate, never stored twice, and never an error.
    """
    now = now or utcnow()
    # read with the row lock that orders this job's events (signals.lock_event_logs)
    job = _worker_job(session, job_id, for_update=True)
    event_logs_locked(session, (job_id,))
    if job.status != "running":
        raise _conflict(job, "accept events")
    accepted = 0
    if events:
        rows = [{"job_id": job_id, "seq": e.seq, "type": e.type, "data": e.data,
                 "created_at": now} for e in events]
        # executemany of one cached statement: SQLAlchemy sends it as one multi-row INSERT
        # ("insertmanyvalues") without compiling a new statement for every batch size.
        inserted = session.connection().execute(_insert_events(session), rows).all()
        accepted = len(inserted)
        if accepted:
            mark_events(session, (job_id,))
        kept = {(s, t) for s, t in inserted}
        progress = dict(job.progress or {})
        changed = False
        for e in events:  # the last accepted event of each progress type wins
            if e.type in PROGRESS_TYPES and (e.seq, e.type) in kept:
                progress[e.type] = e.data
                changed = True
        # the watchdog's step clock: a re-sent step (a resumed attempt) is progress too
        steps = [e.data for e in events if e.type == "step"]
        if steps:
            record_steps(progress, job.attempt, steps, now)
            changed = True
        values: dict[str, Any] = {"heartbeat_at": now}
        if changed:
            progress["updated_at"] = now.isoformat()
            values["progress"] = progress
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                        .values(**values), execution_options={"synchronize_session": False})
    else:
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                        .values(heartbeat_at=now),
                        execution_options={"synchronize_session": False})
    session.commit()
    return accepted, len(events) - accepted, job.cancel_requested


_INSERT_EVENTS: dict[str, Any] = {}


def _insert_events(session: Session):
    """``INSERT INTO job_events ... ON CONFLICT (job_id, seq) DO NOTHING RETURNING seq, type``
    for the session's dialect, built once."""
    name = session.get_bind().dialect.name
    stmt = _INSERT_EVENTS.get(name)
    if stmt is None:
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # pragma: no cover - unsupported dialects
            raise NotImplementedError(name)
        stmt = _INSERT_EVENTS[name] = (
            dialect_insert(JobEvent.__table__)
            .on_conflict_do_nothing(index_elements=["job_id", "seq"])
            .returning(JobEvent.__table__.c.seq, JobEvent.__table__.c.type))
    return stmt


def heartbeat(session: Session, job_id: int, now: datetime | None = None) -> Job:
    """Refresh liveness; the answer tells a worker to stop when the job no longer runs."""
    now = now or utcnow()
    job = _worker_job(session, job_id)
    if job.status == "running":
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                        .values(heartbeat_at=now),
                        execution_options={"synchronize_session": False})
        session.commit()
        session.refresh(job)
    return job


def complete(session: Session, job_id: int, body: CompleteIn, policy: RetryPolicy,
             now: datetime | None = None) -> Job:
    """The worker's final word on this attempt. Only a running job completes; a second
    ``complete`` (or one after the job was reaped) is a 409 carrying the current state."""
    now = now or utcnow()
    job = _worker_job(session, job_id)
    if job.status != "running":
        raise _conflict(job, "complete")
    if body.outcome == "succeeded":
        result = results.ingest(session, job, body.result or {}, now)
        _end_attempt(session, job, "complete", now, status="succeeded", finished_at=now,
                     heartbeat_at=now, result=result, error=None)
        _status_event(session, job, "running", "succeeded", now)
    elif body.outcome == "cancelled":
        _end_attempt(session, job, "complete", now, status="cancelled", finished_at=now,
                     heartbeat_at=now, error=_truncate(body.error))
        _status_event(session, job, "running", "cancelled", now, reason="stopped by worker")
    elif job.cancel_requested:
        # Stopping on request can surface as an error in the worker; it is still a cancel.
        _end_attempt(session, job, "complete", now, status="cancelled", finished_at=now,
                     heartbeat_at=now, error=_truncate(body.error))
        _status_event(session, job, "running", "cancelled", now,
                      reason="failed after a cancel request", error=_truncate(body.error))
    else:
        _end_attempt_failed(session, job, body.error or "worker reported failure", policy, now,
                            body.traceback_tail)
    session.commit()
    return job


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def statuses(values: Iterable[str] | None) -> list[str]:
    """``status=queued,running`` and repeated ``status=`` both work; unknown names are 422."""
    from .models import JOB_STATUSES

    out: list[str] = []
    for v in values or ():
        for s in v.split(","):
            s = s.strip()
            if not s:
                continue
            if s not in JOB_STATUSES:
                raise Invalid.field("status", f"unknown status {s!r} "
                                              f"(one of {', '.join(JOB_STATUSES)})")
            out.append(s)
    return out

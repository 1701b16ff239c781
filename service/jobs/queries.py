"""Reads of jobs for the API: one job a caller may see, keyset pages, counts, what a job
produced, and its events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect

from ..auth import Principal
from ..errors import Forbidden, Invalid, NotFound
from ..models import Architecture, Job, JobEvent, JobTag, LatencyTable
from ..pagination import Cursor, after
from ..schemas import Produced
from .states import JobStatus

__all__ = [
    "JobExtras",
    "JobFilters",
    "job_counts",
    "job_extras",
    "list_events",
    "list_events_of",
    "list_jobs",
    "statuses",
    "statuses_of",
    "visible_job",
]

SORTS = {
    "created_at": ("created_at", False),
    "-created_at": ("created_at", True),
    "priority": ("priority", False),
    "-priority": ("priority", True),
}


def visible_job(session: Session, principal: Principal, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or not principal.can_see(job.project):
        raise NotFound(f"job {job_id} not found")
    return job


_Extras = CompoundSelect[int, int | None, int | None, str | None]


def _extras_query(job_id: BindParameter[int] | list[int]) -> _Extras:
    one = isinstance(job_id, BindParameter)

    def of(col: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
        return col == job_id if one else col.in_(job_id)

    no_tag = cast(null(), String).label("tag")
    q: _Extras = union_all(
        select(literal(0).label("what"), Architecture.job_id, Architecture.id, no_tag).where(
            of(Architecture.job_id)
        ),
        select(literal(1).label("what"), LatencyTable.job_id, LatencyTable.id, no_tag).where(
            of(LatencyTable.job_id)
        ),
        select(literal(2).label("what"), JobEvent.job_id, func.max(JobEvent.id), no_tag)
        .where(of(JobEvent.job_id))
        .group_by(JobEvent.job_id),
        select(literal(3).label("what"), JobTag.job_id, cast(null(), Integer), JobTag.tag).where(
            of(JobTag.job_id)
        ),
    )
    return q.order_by(q.selected_columns[0], q.selected_columns[2], q.selected_columns[3])


# Built once: a statement object memoizes its cache key, so the ORM routes' read of one job
# does not rebuild and re-key the query every time.
_EXTRAS_ONE = _extras_query(bindparam("job_id"))


@dataclass
class JobExtras:
    """What a job page shows beside the row: what it produced, its latest event id (the
    ``Last-Event-ID`` from which to follow only what comes next) and its tags (sorted)."""

    produced: Produced
    last_event_id: int | None = None
    tags: list[str] = field(default_factory=list)


def job_extras(session: Session, job_ids: Sequence[int]) -> dict[int, JobExtras]:
    """:class:`JobExtras` of each job, in one query."""
    out = {i: JobExtras(Produced()) for i in job_ids}
    if not job_ids:
        return out
    if len(out) == 1:
        rows = session.execute(_EXTRAS_ONE, {"job_id": next(iter(out))})
    else:
        rows = session.execute(_extras_query(list(out)))
    for what, jid, rid, tag in rows:
        assert jid is not None  # a nullable column, but the WHERE picks these jobs' rows
        if what == 3:
            assert tag is not None  # only the tags' rows carry one
            out[jid].tags.append(tag)
            continue
        assert rid is not None  # null only in the tags' rows
        if what == 2:
            out[jid].last_event_id = rid
        else:
            (out[jid].produced.latency_tables if what else out[jid].produced.architectures).append(
                rid
            )
    for extras in out.values():
        extras.tags.sort()  # in Python: the database's collation may order text otherwise
    return out


@dataclass(frozen=True)
class JobFilters:
    status: Sequence[str] = ()
    kind: Sequence[str] = ()
    project: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: Jobs carrying every one of these tags.
    tags: Sequence[str] = ()
    #: A sweep's trials: jobs whose ``parent_id`` is this.
    parent_id: int | None = None
    #: Leave out every sweep's trials (jobs with a ``parent_id``).
    top_level: bool = False


def list_jobs(
    session: Session,
    principal: Principal,
    filters: JobFilters,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
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
    for tag in dict.fromkeys(filters.tags):
        q = q.where(exists().where(JobTag.job_id == Job.id, JobTag.tag == tag))
    if filters.parent_id is not None:
        q = q.where(Job.parent_id == filters.parent_id)
    if filters.top_level:
        q = q.where(Job.parent_id.is_(None))
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
    counts = {s.value: 0 for s in JobStatus}
    counts.update(dict(session.execute(q).all()))
    return counts


def list_events(session: Session, job_id: int, after_id: int, limit: int) -> list[JobEvent]:
    return list_events_of(session, {job_id: after_id}, limit)


def list_events_of(session: Session, after: dict[int, int], limit: int) -> list[JobEvent]:
    """Events of several jobs, each after its own id, in id order (one index range each)."""
    if not after:
        return []
    return list(
        session.scalars(
            select(JobEvent)
            .where(or_(*(and_(JobEvent.job_id == j, JobEvent.id > a) for j, a in after.items())))
            .order_by(JobEvent.id)
            .limit(limit)
        )
    )


def statuses_of(session: Session, job_ids: Sequence[int]) -> dict[int, str]:
    """Current status of each existing job (a deleted job is absent)."""
    return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())


def statuses(values: Iterable[str] | None) -> list[str]:
    """``status=queued,running`` and repeated ``status=`` both work; unknown names are 422."""
    out: list[str] = []
    for v in values or ():
        for s in v.split(","):
            s = s.strip()
            if not s:
                continue
            if s not in tuple(JobStatus):
                raise Invalid.field(
                    "status", f"unknown status {s!r} (one of {', '.join(JobStatus)})"
                )
            out.append(s)
    return out

"""``GET /v1/jobs/{id}`` as JSON from one Core read: the hot path (:mod:`service.reads`,
:mod:`service.hotpath`) and the FastAPI route both serve it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, bindparam, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..auth import Principal
from ..errors import NotFound
from ..models import Architecture, Job, JobEvent, JobTag, LatencyTable
from ..reads import Reader
from ..schemas import JobPublic, Produced
from .queries import JobExtras

__all__ = ["job_json"]


class _comma_list(FunctionElement):
    """Comma-separated values of an aggregate (``string_agg`` / ``group_concat``): ids, or
    tags (which hold no comma)."""

    type = String()
    inherit_cache = True
    name = "comma_list"


@compiles(_comma_list, "postgresql")
def _comma_list_pg(element, compiler, **kw):
    return f"string_agg(CAST({compiler.process(element.clauses, **kw)} AS VARCHAR), ',')"


@compiles(_comma_list)
def _comma_list_default(element, compiler, **kw):
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


def _ids_of(table) -> Any:
    return select(_comma_list(table.c.id)).where(table.c.job_id == Job.id).scalar_subquery()


# One round trip for the job page: the columns JobPublic shows (not claimed_by,
# idempotency_key, created_by) and the JobExtras.
_JOB_DOC = select(
    *[
        Job.__table__.c[name]
        for name in JobPublic.model_fields
        if name not in JobExtras.__dataclass_fields__
    ],
    _ids_of(Architecture.__table__).label("architecture_ids"),
    _ids_of(LatencyTable.__table__).label("latency_table_ids"),
    select(_comma_list(JobTag.tag)).where(JobTag.job_id == Job.id).scalar_subquery().label("tags"),
    select(func.max(JobEvent.id))
    .where(JobEvent.job_id == Job.id)
    .scalar_subquery()
    .label("last_event_id"),
).where(Job.id == bindparam("job_id"))


def _parse_ids(text: str | None) -> list[int]:
    return sorted(int(x) for x in text.split(",")) if text else []


async def job_json(reader: Reader, principal: Principal, job_id: int) -> str:
    """``GET /v1/jobs/{id}`` as JSON, from one Core read (the hot path: :mod:`service.reads`).
    The same document as :class:`JobPublic` of the ORM row (a test compares them)."""
    row = await reader.one(_JOB_DOC, {"job_id": job_id})
    if row is None or not principal.can_see(row["project"]):
        raise NotFound(f"job {job_id} not found")
    row["produced"] = Produced(
        architectures=_parse_ids(row.pop("architecture_ids")),
        latency_tables=_parse_ids(row.pop("latency_table_ids")),
    )
    row["tags"] = sorted(row["tags"].split(",")) if row["tags"] else []
    return JobPublic.model_validate(row).model_dump_json()

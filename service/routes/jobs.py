"""User routes for jobs: create (idempotent), list (keyset pages), read, cancel, retry."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response, status

from .. import admission, jobs
from .. import architectures as archs
from ..auth import CurrentUser, ReaderDep, SessionDep, SettingsDep
from ..derive import warm_up_in_background
from ..errors import Invalid
from ..models import Job
from ..schemas import (
    MAX_TAGS,
    TAG_PATTERN,
    ArchitectureDetail,
    DerivedFamily,
    DeriveFamilyRequest,
    DeriveRequest,
    JobCreate,
    JobKind,
    JobPublic,
    JobsPublic,
    JobStats,
    JobTagsUpdate,
)
from . import AUTH_ERRORS, RowId, problems

# the lifespan imports the derivation's core (torch) as the server starts (issue 15)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], lifespan=warm_up_in_background)


def to_public(job: Job, extras: jobs.JobExtras) -> JobPublic:
    out = JobPublic.model_validate(job)
    out.produced, out.last_event_id = extras.produced, extras.last_event_id
    out.tags = extras.tags
    return out


def one(session, job: Job) -> JobPublic:
    return to_public(job, jobs.job_extras(session, [job.id])[job.id])


@router.post(
    "",
    response_model=JobPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": JobPublic, "description": "Idempotent replay"},
        **problems(*AUTH_ERRORS, 409, 413),
    },
)
def create_job(
    request: Request,
    response: Response,
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    body: Annotated[JobCreate, Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobPublic:
    # A sync route: FastAPI runs it in its thread pool, so admission (counting a custom space,
    # then building it; resolving dataset paths) never holds up the event loop. The schema
    # validation that ran on the loop did nothing proportional to a space's size.
    admission.admit(body, settings)
    job, created = jobs.create_job(
        session,
        principal,
        body,
        default_max_attempts=settings.max_attempts,
        idempotency_key=idempotency_key,
    )
    if created:
        dispatcher = getattr(request.app.state, "dispatcher", None)
        if dispatcher is not None:
            dispatcher.wake()
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return one(session, job)


@router.get("", response_model=JobsPublic, responses=problems(*AUTH_ERRORS))
def list_jobs(
    principal: CurrentUser,
    session: SessionDep,
    status_: Annotated[
        list[str] | None,
        Query(alias="status", description="job statuses, comma-separated or repeated"),
    ] = None,
    kind: Annotated[
        list[JobKind] | None, Query(description="job kinds (repeat for several)")
    ] = None,
    project: Annotated[
        str | None,
        Query(max_length=100, description="only this project's jobs (admins: any project)"),
    ] = None,
    created_after: Annotated[
        datetime | None, Query(description="created after this time (no zone: UTC)")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="created before this time (no zone: UTC)")
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_TAGS,
            description="jobs carrying every one of these tags (repeat for several)",
        ),
    ] = None,
    parent: Annotated[
        int | None,
        Query(
            ge=-(2**63),
            le=2**63 - 1,
            description="a sweep's trials: jobs whose parent_id is this job id",
        ),
    ] = None,
    top_level: Annotated[
        bool, Query(description="true: leave out sweeps' trials (jobs with a parent_id)")
    ] = False,
    sort: Annotated[
        str, Query(description="created_at, -created_at, priority, -priority")
    ] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=500, description="most jobs on one page")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=2000, description="next_cursor of the previous page (same filters)"),
    ] = None,
) -> JobsPublic:
    filters = jobs.JobFilters(
        status=jobs.statuses(status_),
        kind=list(kind or ()),
        project=project,
        created_after=_aware(created_after),
        created_before=_aware(created_before),
        tags=_tags(tag),
        parent_id=parent,
        top_level=top_level,
    )
    rows, next_cursor = jobs.list_jobs(
        session, principal, filters, sort=sort, limit=limit, cursor=cursor
    )
    extras = jobs.job_extras(session, [j.id for j in rows])
    return JobsPublic(data=[to_public(j, extras[j.id]) for j in rows], next_cursor=next_cursor)


_TAG = re.compile(TAG_PATTERN)


def _tags(values: list[str] | None) -> list[str]:
    """``?tag=`` values: each a possible tag (422 naming ``tag`` otherwise)."""
    for v in values or ():
        if not 1 <= len(v) <= 64 or not _TAG.match(v):
            raise Invalid.field(
                "tag", f"{v[:80]!r} is not a tag (1-64 of A-Z a-z 0-9 _ . : = + / -)"
            )
    return list(values or ())


def _aware(value: datetime | None) -> datetime | None:
    """A timestamp without a zone is taken as UTC (what the API returns)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@router.get("/stats", response_model=JobStats, responses=problems(*AUTH_ERRORS))
def job_stats(principal: CurrentUser, session: SessionDep) -> JobStats:
    return JobStats(counts=jobs.job_counts(session, principal))


@router.get("/{job_id}", response_model=JobPublic, responses=problems(*AUTH_ERRORS, 404))
async def get_job(job_id: RowId, principal: CurrentUser, reader: ReaderDep) -> Response:
    # The hot read: no thread hop, no ORM, no second validation of the response model.
    return Response(await jobs.job_json(reader, principal, job_id), media_type="application/json")


@router.put("/{job_id}/tags", response_model=JobPublic, responses=problems(*AUTH_ERRORS, 404))
def put_tags(
    job_id: RowId, body: JobTagsUpdate, principal: CurrentUser, session: SessionDep
) -> JobPublic:
    """Replace the job's tags with ``tags`` (a job of the caller's project, or any job for an
    admin)."""
    job = jobs.visible_job(session, principal, job_id)
    jobs.set_tags(session, job, body.tags)
    return one(session, job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={
        202: {"model": JobPublic, "description": "cancel requested from the running worker"},
        **problems(*AUTH_ERRORS, 404, 409),
    },
)
def cancel_job(
    job_id: RowId, response: Response, principal: CurrentUser, session: SessionDep
) -> JobPublic:
    job = jobs.cancel(session, principal, job_id)
    if job.status == jobs.JobStatus.RUNNING:
        response.status_code = status.HTTP_202_ACCEPTED
    return one(session, job)


@router.post(
    "/{job_id}/retry", response_model=JobPublic, responses=problems(*AUTH_ERRORS, 404, 409)
)
def retry_job(
    request: Request, job_id: RowId, principal: CurrentUser, session: SessionDep
) -> JobPublic:
    job = jobs.retry(session, principal, job_id)
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
    return one(session, job)


@router.post(
    "/{job_id}/derive",
    response_model=ArchitectureDetail,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*AUTH_ERRORS, 404, 409),
)
def derive(
    job_id: RowId, body: DeriveRequest, principal: CurrentUser, session: SessionDep
) -> ArchitectureDetail:
    """Re-derive from a succeeded search's α/β under a new budget (see service.derive)."""
    arch = archs.derive_from_search(session, principal, job_id, body.cost, body.name)
    return archs.detail(session, principal, arch)


@router.post(
    "/{job_id}/derive-family",
    response_model=DerivedFamily,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*AUTH_ERRORS, 404, 409),
)
def derive_family(
    job_id: RowId, body: DeriveFamilyRequest, principal: CurrentUser, session: SessionDep
) -> DerivedFamily:
    """Derive one architecture per budget from a succeeded search's α/β, in one transaction: the
    list answers in the budgets' order (equal budgets: the same architecture); a budget nothing
    fits is a 422 naming ``budgets[i]``, and then nothing is stored."""
    found = archs.derive_family_from_search(session, principal, job_id, body.budgets, body.name)
    details: dict[int, ArchitectureDetail] = {}
    for arch in found:
        if arch.id not in details:
            details[arch.id] = archs.detail(session, principal, arch)
    return DerivedFamily(data=[details[a.id] for a in found])

"""Worker routes (docs/DESIGN.md "Worker ⇄ control plane"): only the job's own token may call
them. Events are batched and deduplicated on ``seq``; every answer carries ``cancel_requested``
so a worker learns of a cancel on its next report."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request

from workers.payload import WORKER_EVENT_TYPES

from .. import jobs
from ..auth import JobWorker, SessionDep
from ..errors import Forbidden
from ..retry import RetryPolicy
from ..schemas import CompleteIn, EventIn, EventsAccepted, EventsIn, HeartbeatOut, JobPublic
from . import AUTH_ERRORS, RowId, problems
from .jobs import one

router = APIRouter(prefix="/v1/jobs", tags=["worker"])


def _worker_types_only(events: Sequence[EventIn]) -> None:
    """A job token reports progress; it never writes the control plane's own history."""
    foreign = sorted({e.type for e in events} - WORKER_EVENT_TYPES)
    if foreign:
        raise Forbidden(
            f"a job token cannot post {', '.join(map(repr, foreign))} events "
            f"(worker event types: {', '.join(sorted(WORKER_EVENT_TYPES))})"
        )


@router.post(
    "/{job_id}/events",
    response_model=EventsAccepted,
    responses=problems(*AUTH_ERRORS, 404, 409, 413),
)
def post_events(
    request: Request, job_id: RowId, body: EventsIn, worker: JobWorker, session: SessionDep
) -> EventsAccepted:
    _worker_types_only(body.events)
    accepted, duplicates, cancel = jobs.ingest_events(session, job_id, body.events)
    metrics = request.app.state.metrics
    if accepted:
        metrics.events_ingested.labels("accepted").inc(accepted)
    if duplicates:
        metrics.events_ingested.labels("duplicate").inc(duplicates)
    return EventsAccepted(accepted=accepted, duplicates=duplicates, cancel_requested=cancel)


@router.post(
    "/{job_id}/heartbeat", response_model=HeartbeatOut, responses=problems(*AUTH_ERRORS, 404)
)
def post_heartbeat(job_id: RowId, worker: JobWorker, session: SessionDep) -> HeartbeatOut:
    job = jobs.heartbeat(session, job_id)
    # A job that is no longer running tells its worker to stop, whatever the reason.
    stop = job.cancel_requested or job.status != jobs.JobStatus.RUNNING
    return HeartbeatOut(status=job.status, cancel_requested=stop)


@router.post(
    "/{job_id}/complete", response_model=JobPublic, responses=problems(*AUTH_ERRORS, 404, 409, 413)
)
def post_complete(
    request: Request, job_id: RowId, body: CompleteIn, worker: JobWorker, session: SessionDep
) -> JobPublic:
    policy = RetryPolicy.from_settings(request.app.state.settings)
    job = jobs.complete(session, job_id, body, policy)
    return one(session, job)

"""A job's event log: Server-Sent Events for live views, JSON pages for history.

SSE: each stored event is sent with ``id:`` = its row id, ``event:`` = its type and the row as
JSON ``data:``. A client resumes with ``Last-Event-ID`` (or ``?after=``) and gets exactly the
rows after it. The stream reads the table when woken by a commit of the job's events
(:mod:`service.signals`: this process's writes, other replicas' through PostgreSQL
``NOTIFY``) and at least every ``DENSENAS_SSE_POLL_S`` in any case, sends keep-alive comments
while idle, and ends with an ``end`` event once the job is terminal and every
event has been sent — a browser ``EventSource`` would otherwise reconnect forever.

``GET /v1/events?jobs=12:340,15`` is the same stream for many jobs at once (a browser allows
only ~6 connections per host): per-job cursors, an ``end`` per job, closed after the last.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from .. import jobs
from ..auth import CurrentUser, SessionDep
from ..errors import Invalid
from ..schemas import EventPublic, EventsPublic
from . import AUTH_ERRORS, RowId, problems

router = APIRouter(prefix="/v1/jobs", tags=["events"])
multi_router = APIRouter(prefix="/v1", tags=["events"])

_BATCH = 500


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise Invalid.field("Last-Event-ID", "must be an event id (integer)") from None
        if value < 0:
            raise Invalid.field("Last-Event-ID", "must be ≥ 0")
        return value
    return after or 0


def _wants_json(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "json"
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


#: The SSE contract, in both stream routes' OpenAPI descriptions (docs/DESIGN.md, "API").
SSE_CONTRACT = (
    "SSE (`text/event-stream`): one message per stored event, `id:` = the event's id "
    "(increasing), `event:` = its type (`step`, `epoch`, `arch`, `log`, `error` from workers; "
    "`status` for a state transition), `data:` = the event as JSON (an `EventPublic`: `data` "
    "holds the type's payload, e.g. `StepEventData`). Idle streams get keep-alive comments. "
    "Once the job is terminal and every event was sent: `event: end`, `data: "
    '{"job_id": ..., "status": ...}` (no `id:`). Resume: reconnect with `Last-Event-ID` '
    "(or `?after=`) = the last id seen; exactly the later events follow."
)


@router.get(
    "/{job_id}/events",
    description=(
        "A job's events. "
        + SSE_CONTRACT
        + " With `Accept: application/json` or `?format=json`: one JSON page "
        "(`after`, `limit`) instead."
    ),
    response_model=EventsPublic,
    responses={
        200: {
            "content": {"text/event-stream": {}, "application/json": {}},
            "description": "SSE stream, or a JSON page with "
            "Accept: application/json / ?format=json",
        },
        **problems(*AUTH_ERRORS, 404),
    },
)
async def job_events(
    request: Request,
    job_id: RowId,
    principal: CurrentUser,
    session: SessionDep,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[str | None, Query(pattern="^(json|sse)$")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
):
    await anyio.to_thread.run_sync(jobs.visible_job, session, principal, job_id)
    start = _resume_point(last_event_id, after)
    if _wants_json(request, format):
        rows = await anyio.to_thread.run_sync(jobs.list_events, session, job_id, start, limit)
        data = [EventPublic.model_validate(r) for r in rows]
        page = EventsPublic(data=data, next_after=data[-1].id if data else start)
        return JSONResponse(page.model_dump(mode="json"))
    session.close()  # the stream opens short sessions of its own; do not pin a connection
    return _sse_response(request, {job_id: start})


#: Most jobs one multi-job stream follows (the dashboard's list pages show ≤ 100 rows).
MAX_STREAM_JOBS = 100
_CURSOR = re.compile(r"^(\d{1,18})(?::(\d{1,18}))?$")


def parse_job_cursors(value: str) -> dict[int, int]:
    """``"12:340,15,17:402"`` → {12: 340, 15: 0, 17: 402} (job id, events after id)."""
    out: dict[int, int] = {}
    for i, part in enumerate(p.strip() for p in value.split(",")):
        m = _CURSOR.match(part)
        if m is None:
            raise Invalid.field(
                "jobs", f"item {i} ({part[:40]!r}) is not JOB or JOB:AFTER_ID (integers)"
            )
        out[int(m[1])] = max(out.get(int(m[1]), 0), int(m[2] or 0))
    if len(out) > MAX_STREAM_JOBS:
        raise Invalid.field("jobs", f"at most {MAX_STREAM_JOBS} jobs per stream")
    return out


@multi_router.get(
    "/events",
    description=(
        "One stream for up to 100 jobs (`jobs=JOB` or `JOB:AFTER_ID`, comma-separated). "
        + SSE_CONTRACT
        + " Here each event's `data` carries its `job_id`, an `end` is sent per job and the "
        "stream closes after the last; `Last-Event-ID` is not read: resume with each job's last "
        "seen id in `jobs`."
    ),
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "SSE: the events of every listed job in commit order per job; an "
            "``end`` event per job once it is terminal; closes after the last",
        },
        **problems(*AUTH_ERRORS, 404),
    },
)
async def many_job_events(
    request: Request,
    principal: CurrentUser,
    session: SessionDep,
    jobs_: Annotated[
        str,
        Query(
            alias="jobs",
            min_length=1,
            max_length=4000,
            description="comma-separated JOB or JOB:AFTER_ID, e.g. "
            "12:340,15 (resume: the last id seen per job)",
        ),
    ],
):
    """One stream for many jobs (a browser allows ~6 connections per host). Each event's data
    carries its ``job_id``; resume by reconnecting with each job's last seen id in ``jobs``."""
    cursors = parse_job_cursors(jobs_)

    def check() -> None:
        for job_id in cursors:
            jobs.visible_job(session, principal, job_id)

    await anyio.to_thread.run_sync(check)
    session.close()
    return _sse_response(request, cursors)


def _sse_response(request: Request, cursors: dict[int, int]) -> EventSourceResponse:
    settings = request.app.state.settings
    return EventSourceResponse(
        _stream(request, cursors, settings.sse_poll_s),
        ping=settings.sse_ping_s,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    request: Request, cursors: dict[int, int], poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """Events after each job's cursor, live; an ``end`` event per job once it is terminal and
    everything committed with its terminal transition has been sent; returns after the last.

    A job seen terminal is ended only after one more read returned everything (fewer rows
    than a batch): events are read before statuses, so the rows written with (or before) the
    terminal transition are visible to that next read."""
    factory = request.app.state.session_factory
    stopping = request.app.state.stopping
    active = dict(cursors)
    ending: dict[int, str] = {}
    gone = jobs.JobStatus.CANCELLED  # a deleted job's stream ends as cancelled

    def fetch(after: dict[int, int]) -> tuple[list[EventPublic], dict[int, str]]:
        with factory() as s:
            rows = [EventPublic.model_validate(r) for r in jobs.list_events_of(s, after, _BATCH)]
            return rows, jobs.statuses_of(s, list(after))

    with request.app.state.signals.subscribe(list(active)) as wake:
        while active and not stopping.is_set():
            wake.clear()  # before the read: a commit during it wakes the next wait
            rows, statuses = await anyio.to_thread.run_sync(fetch, dict(active))
            for ev in rows:
                active[ev.job_id] = ev.id
                yield ServerSentEvent(
                    data=json.dumps(ev.model_dump(mode="json")), id=str(ev.id), event=ev.type
                )
            if len(rows) >= _BATCH:
                continue  # more to send right away
            for job_id, status in sorted(ending.items()):
                yield ServerSentEvent(
                    data=json.dumps({"job_id": job_id, "status": status}), event="end"
                )
                del active[job_id]
            ending = {
                j: statuses.get(j, gone) for j in active if jobs.is_terminal(statuses.get(j, gone))
            }
            if ending:
                continue  # one more read sends what came with the terminal transition
            if await request.is_disconnected():
                return
            with anyio.move_on_after(poll_s):
                await wake.wait()

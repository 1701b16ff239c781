"""A job's event log: Server-Sent Events for live views, JSON pages for history.

SSE: each stored event is sent with ``id:`` = its row id, ``event:`` = its type and the row as
JSON ``data:``. A client resumes with ``Last-Event-ID`` (or ``?after=``) and gets exactly the
rows after it. The stream reads the table when woken by a commit of the job's events
(:mod:`service.signals`: this process's writes, other replicas' through PostgreSQL
``NOTIFY``) and at least every ``DENSENAS_SSE_POLL_S`` in any case, sends keep-alive comments
while idle, and ends with an ``end`` event once the job is terminal and every
event has been sent — a browser ``EventSource`` would otherwise reconnect forever.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from .. import jobs
from ..auth import CurrentUser, SessionDep
from ..errors import Invalid
from ..models import Job
from ..schemas import EventPublic, EventsPublic
from . import AUTH_ERRORS, RowId, problems

router = APIRouter(prefix="/v1/jobs", tags=["events"])

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


@router.get("/{job_id}/events", response_model=EventsPublic,
            responses={200: {"content": {"text/event-stream": {}, "application/json": {}},
                             "description": "SSE stream, or a JSON page with "
                                            "Accept: application/json / ?format=json"},
                       **problems(*AUTH_ERRORS, 404)})
async def job_events(request: Request, job_id: RowId, principal: CurrentUser, session: SessionDep,
                     after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     format: Annotated[str | None, Query(pattern="^(json|sse)$")] = None,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID",
                                                                 max_length=40)] = None):
    await anyio.to_thread.run_sync(jobs.visible_job, session, principal, job_id)
    start = _resume_point(last_event_id, after)
    if _wants_json(request, format):
        rows = await anyio.to_thread.run_sync(jobs.list_events, session, job_id, start, limit)
        data = [EventPublic.model_validate(r) for r in rows]
        page = EventsPublic(data=data, next_after=data[-1].id if data else start)
        return JSONResponse(page.model_dump(mode="json"))
    session.close()  # the stream opens short sessions of its own; do not pin a connection
    settings = request.app.state.settings
    return EventSourceResponse(
        _stream(request, job_id, start, settings.sse_poll_s), ping=settings.sse_ping_s,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(request: Request, job_id: int, after_id: int,
                  poll_s: float) -> AsyncIterator[ServerSentEvent]:
    factory = request.app.state.session_factory
    stopping = request.app.state.stopping

    def fetch(last: int) -> tuple[list[EventPublic], str]:
        # Events first, status second: if the status read sees a terminal state, every event
        # written with (or before) that transition is visible to the next fetch.
        with factory() as s:
            rows = [EventPublic.model_validate(r) for r in jobs.list_events(s, job_id, last,
                                                                            _BATCH)]
            job = s.get(Job, job_id)
            return rows, job.status if job is not None else "cancelled"

    def sse(ev: EventPublic) -> ServerSentEvent:
        return ServerSentEvent(data=json.dumps(ev.model_dump(mode="json")), id=str(ev.id),
                               event=ev.type)

    last = after_id
    with request.app.state.signals.subscribe(job_id) as wake:
        while not stopping.is_set():
            wake.clear()  # before the read: a commit during it wakes the next wait
            rows, status = await anyio.to_thread.run_sync(fetch, last)
            for ev in rows:
                last = ev.id
                yield sse(ev)
            if jobs.is_terminal(status):
                while True:  # drain what was committed with the terminal transition
                    rows, _ = await anyio.to_thread.run_sync(fetch, last)
                    for ev in rows:
                        last = ev.id
                        yield sse(ev)
                    if len(rows) < _BATCH:
                        break
                yield ServerSentEvent(data=json.dumps({"job_id": job_id, "status": status}),
                                      event="end")
                return
            if len(rows) < _BATCH:
                if await request.is_disconnected():
                    return
                with anyio.move_on_after(poll_s):
                    await wake.wait()

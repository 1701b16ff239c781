"""Unauthenticated operational routes: liveness with a database check, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import __version__
from ..db import check_database
from ..errors import Unavailable, problem_response
from ..schemas import Health
from . import problems

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, responses=problems(503))
async def healthz(request: Request) -> Health | Response:
    try:
        await run_in_threadpool(check_database, request.app.state.engine)
    except Exception:  # noqa: BLE001 - any failure to reach the database is a 503
        return problem_response(Unavailable("database unreachable"))
    return Health(status="ok", database="ok", version=__version__)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    body, content_type = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type=content_type)

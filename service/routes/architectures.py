"""Architectures produced by searches: filtered lists, the Pareto front, details, downloads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from .. import architectures as archs
from .. import core
from ..auth import CurrentUser, SessionDep
from ..schemas import ArchitectureDetail, ArchitecturesPublic
from . import AUTH_ERRORS, RowId, problems

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


@router.get("", response_model=ArchitecturesPublic, responses=problems(*AUTH_ERRORS))
def list_architectures(
    principal: CurrentUser,
    session: SessionDep,
    space: Annotated[str | None, Query(max_length=100)] = None,
    max_mult_adds: Annotated[float | None, Query(ge=0)] = None,
    max_latency_ms: Annotated[float | None, Query(ge=0)] = None,
    latency_table_id: Annotated[int | None, Query(ge=1)] = None,
    min_accuracy: Annotated[float | None, Query()] = None,
    pareto: Annotated[
        str | None, Query(description="latency,accuracy or mult_adds,accuracy")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> ArchitecturesPublic:
    f = archs.ArchFilters(
        space=space,
        max_mult_adds=max_mult_adds,
        max_latency_ms=max_latency_ms,
        latency_table_id=latency_table_id,
        min_accuracy=min_accuracy,
        pareto=pareto,
    )
    data, nxt = archs.list_architectures(session, principal, f, limit=limit, cursor=cursor)
    return ArchitecturesPublic(data=data, next_cursor=nxt)


@router.get("/{arch_id}", response_model=ArchitectureDetail, responses=problems(*AUTH_ERRORS, 404))
def get_architecture(
    arch_id: RowId, principal: CurrentUser, session: SessionDep
) -> ArchitectureDetail:
    return archs.detail(session, principal, archs.visible_arch(session, principal, arch_id))


@router.get(
    "/{arch_id}/download",
    responses={
        200: {
            "content": {"application/json": {}, "application/octet-stream": {}},
            "description": "the architecture document or an ONNX graph",
        },
        **problems(*AUTH_ERRORS, 404),
    },
)
async def download_architecture(
    arch_id: RowId,
    principal: CurrentUser,
    session: SessionDep,
    format: Literal["json", "onnx"] = "json",
) -> Response:
    arch = await run_in_threadpool(archs.visible_arch, session, principal, arch_id)
    if format == "json":
        return JSONResponse(
            arch.doc,
            headers={"Content-Disposition": f'attachment; filename="architecture-{arch.id}.json"'},
        )
    data = await run_in_threadpool(core.export_onnx, arch.doc)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="architecture-{arch.id}.onnx"'},
    )

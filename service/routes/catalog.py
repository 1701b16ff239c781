"""Read-only catalogs: latency tables (per project) and the preset search spaces."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from .. import core
from ..architectures import visible_table
from ..auth import CurrentUser, SessionDep
from ..errors import NotFound
from ..models import LatencyTable
from ..schemas import (
    LatencyTableDetail,
    LatencyTablePublic,
    LatencyTablesPublic,
    SpaceDetail,
    SpacePublic,
    SpacesPublic,
)
from . import AUTH_ERRORS, RowId, problems

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/latency-tables", response_model=LatencyTablesPublic, responses=problems(*AUTH_ERRORS))
def list_latency_tables(principal: CurrentUser, session: SessionDep) -> LatencyTablesPublic:
    q = select(LatencyTable).order_by(LatencyTable.id.desc())
    if not principal.is_admin:
        q = q.where(LatencyTable.project == principal.project)
    return LatencyTablesPublic(
        data=[LatencyTablePublic.model_validate(t) for t in session.scalars(q)]
    )


@router.get(
    "/latency-tables/{table_id}",
    response_model=LatencyTableDetail,
    responses=problems(*AUTH_ERRORS, 404),
)
def get_latency_table(
    table_id: RowId, principal: CurrentUser, session: SessionDep
) -> LatencyTableDetail:
    return LatencyTableDetail.model_validate(visible_table(session, principal, table_id))


def _space_public(space) -> dict:
    return {
        "name": space.name,
        "family": space.family,
        "input_size": space.input_size,
        "summary": space.summary(),
    }


@router.get("/spaces", response_model=SpacesPublic, responses=problems(*AUTH_ERRORS))
def list_spaces(principal: CurrentUser) -> SpacesPublic:
    return SpacesPublic(
        data=[SpacePublic(**_space_public(core.get_space(n))) for n in core.space_names()]
    )


@router.get("/spaces/{name}", response_model=SpaceDetail, responses=problems(*AUTH_ERRORS, 404))
def get_space(name: str, principal: CurrentUser) -> SpaceDetail:
    if name not in core.space_names():
        raise NotFound(f"space {name!r} not found (presets: {', '.join(core.space_names())})")
    space = core.get_space(name)
    blocks = [
        dict(row, inputs=[{"from": src, "stride": st} for src, st in row["inputs"]])
        for row in space.block_table()
    ]
    return SpaceDetail(**_space_public(space), description=space.to_dict(), blocks=blocks)

"""HTTP routes, one module per resource; thin: parse, call the domain layer, serialize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from ..schemas import Problem

#: A row id in a URL path. Larger ids than a 64-bit integer cannot name a row, and would
#: overflow the SQLite driver, so they are a 422 naming the parameter.
RowId = Annotated[int, Path(ge=-(2**63), le=2**63 - 1, description="row id")]

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem+json errors a route can answer."""
    return dict.fromkeys(codes, _PROBLEM)


#: Every authenticated route may answer these.
AUTH_ERRORS = (401, 403, 422)

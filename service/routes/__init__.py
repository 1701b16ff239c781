"""HTTP routes, one module per resource; thin: parse, call the domain layer, serialize."""
from __future__ import annotations

from typing import Any

from ..schemas import Problem

_PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem+json errors a route can answer."""
    return {code: _PROBLEM for code in codes}


#: Every authenticated route may answer these.
AUTH_ERRORS = (401, 403, 422)

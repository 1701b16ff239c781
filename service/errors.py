"""One exception root for the control plane and its single mapping to RFC 7807 problems.

Domain code (the job state machine, token checks, result ingestion) raises these without knowing
about HTTP; :func:`install_error_handlers` turns each into ``application/problem+json`` with one
status per class. Validation failures name every field as a dotted path (``spec.batch_size``) so
a person can fix the request without reading the schema. Unexpected exceptions become a bare 500
that says nothing about internals; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://densenas.dev/problems/"


class DenseNASError(Exception):
    """Root of every error the control plane raises on purpose."""

    status = 500
    title = "Internal Server Error"
    type_slug = "internal"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {
            "type": _TYPE_BASE + self.type_slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class NotFound(DenseNASError):
    status, title, type_slug = 404, "Not Found", "not-found"


class Conflict(DenseNASError):
    """An illegal transition or a duplicate; carries the resource's current state."""

    status, title, type_slug = 409, "Conflict", "conflict"

    def __init__(self, detail: str, current_state: str | None = None, **extra: Any) -> None:
        super().__init__(detail, current_state=current_state, **extra)
        self.current_state = current_state


class Forbidden(DenseNASError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class Unauthorized(DenseNASError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="densenas"'}


class Invalid(DenseNASError):
    """A request that is well-formed JSON but not acceptable; ``errors`` names the fields."""

    status, title, type_slug = 422, "Unprocessable Content", "invalid"

    def __init__(
        self, detail: str | None = None, errors: Sequence[dict[str, Any]] = (), **extra: Any
    ) -> None:
        errors = list(errors)
        if detail is None and errors:
            detail = f"{errors[0]['loc']}: {errors[0]['msg']}"
        super().__init__(detail, errors=errors, **extra)

    @classmethod
    def field(cls, loc: str, msg: str) -> Invalid:
        return cls(errors=[{"loc": loc, "msg": msg}])


class PayloadTooLarge(DenseNASError):
    status, title, type_slug = 413, "Payload Too Large", "payload-too-large"


class Unavailable(DenseNASError):
    status, title, type_slug = 503, "Service Unavailable", "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def database_unavailable(exc: BaseException) -> Unavailable | None:
    """The 503 for an error that means "the database cannot be reached right now" (a restart,
    a dropped connection), else None. Such a request did not happen: retrying it is safe."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    lost = isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    if not lost:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a dependency
            return None
        lost = isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return Unavailable("the database is unavailable; retry shortly") if lost else None


def problem_response(exc: DenseNASError) -> JSONResponse:
    return JSONResponse(
        exc.body(), status_code=exc.status, headers=exc.headers(), media_type=PROBLEM_JSON
    )


# -- validation errors -------------------------------------------------------------------------

_UNION_TAGS = frozenset({"search", "retrain", "profile"})


def format_loc(loc: Iterable[Any]) -> str:
    """``("body", "search", "spec", "a_betas", 0)`` → ``"spec.a_betas[0]"``.

    The request part (``body``/``query``/...) and the discriminator tag pydantic inserts for
    tagged unions are dropped: a person wrote ``spec.batch_size``, not ``body.search.spec...``.
    """
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        source = parts.pop(0)
        if source == "body" and parts and parts[0] in _UNION_TAGS:
            parts.pop(0)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def validation_problem(errors: Sequence[dict[str, Any]]) -> Invalid:
    items = []
    for e in errors:
        loc = format_loc(e.get("loc", ()))
        ctx = e.get("ctx") or {}
        sub = ctx.get("field") if isinstance(ctx, dict) else None
        if isinstance(sub, str) and sub:
            loc = f"{loc}{'' if sub.startswith('[') else '.'}{sub}"
        elif e.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = f"{loc}.kind" if loc != "body" else "kind"
        items.append({"loc": loc, "msg": str(e.get("msg", "invalid")), "type": e.get("type")})
    return Invalid(errors=items)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DenseNASError)
    async def _domain(request: Request, exc: DenseNASError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = DenseNASError(str(exc.detail))
        err.status = exc.status_code
        err.title = _reason(exc.status_code)
        err.type_slug = "http-" + str(exc.status_code)
        resp = problem_response(err)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_response(exc, request.method, request.url.path)

    # Database errors by class as well as the catch-all: the handlers for them answer inside
    # the app, whereas the catch-all (``Exception``) is Starlette's server-error path, which
    # re-raises and makes uvicorn close the keep-alive connection — a client's next request on
    # it would fail instead of getting 503s.
    import psycopg
    from sqlalchemy.exc import DBAPIError

    for error in (DBAPIError, psycopg.Error, Exception):
        app.add_exception_handler(error, _unexpected)


def unexpected_response(exc: BaseException, method: str, path: str) -> JSONResponse:
    """503 when the database is out of reach, else a bare 500 (the details go to the log)."""
    unavailable = database_unavailable(exc)
    if unavailable is not None:
        log.warning("%s %s: database unavailable (%s)", method, path, type(exc).__name__)
        return problem_response(unavailable)
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return problem_response(DenseNASError("An unexpected error occurred."))


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"

"""Who is calling: bearer tokens resolved to a :class:`Principal`, and the route guards.

Authentication happens first, in :class:`AuthMiddleware`, for every ``/v1`` request: a missing
or bad token is a 401 before routing, body parsing or validation, so an anonymous caller learns
nothing (not even whether a route or an id exists). Route dependencies then only authorize.

Three kinds of caller: a user token sees its own project, an admin token sees every project and
may manage tokens, and a per-job worker token (minted by the dispatcher for one attempt) may only
call the worker routes of that one job — everything else answers 403 to it. Unknown, malformed
and revoked tokens are all the same 401, so the answer does not tell which one it was.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from .errors import Forbidden, Unauthorized, problem_response, unexpected_response
from .models import Token
from .reads import Reader
from .settings import Settings
from .tokens import find_token, hash_token, revocation_epoch


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    project: str
    is_admin: bool
    job_id: int | None = None

    @classmethod
    def of(cls, token: Token) -> Principal:
        return cls(token.id, token.name, token.project, token.is_admin, token.job_id)

    def can_see(self, project: str) -> bool:
        return self.is_admin or project == self.project


# The dependencies below that do no I/O are ``async def``: FastAPI runs a plain ``def``
# dependency in the thread pool, a hop that costs more than the function itself.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    # Creating a Session does no I/O (it connects on first use); closing it returns the
    # connection to the pool (a ROLLBACK round trip), so that part runs in a thread, shielded
    # so that a cancelled request still gives its connection back.
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(session.close)


async def get_reader(request: Request) -> Reader:
    return request.app.state.reader


SettingsDep = Annotated[Settings, Depends(get_settings)]
ReaderDep = Annotated[Reader, Depends(get_reader)]
SessionDep = Annotated[Session, Depends(get_session)]


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


def resolve_token(
    session_factory: sessionmaker[Session], plaintext: str | None
) -> Principal | None:
    if not plaintext:
        return None
    with session_factory() as session:
        token = find_token(session, plaintext)
        return Principal.of(token) if token is not None else None


class TokenCache:
    """Tokens verified against the database in the last ``ttl_s`` seconds: sha256 digest →
    :class:`Principal`. Only live tokens are kept (an unknown token always reaches the
    database, so a new one works at once and junk cannot fill the cache). An entry is dropped
    when it expires or when this process revokes any token (:func:`tokens.revocation_epoch`)."""

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, int, float]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, epoch, expires = entry
        if epoch != revocation_epoch() or time.monotonic() >= expires:
            self._entries.pop(digest, None)
            return None
        return principal

    def put(self, digest: str, principal: Principal, epoch: int) -> None:
        """``epoch``: :func:`revocation_epoch` read *before* the database look-up."""
        if self.ttl_s <= 0 or epoch != revocation_epoch():
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (principal, epoch, time.monotonic() + self.ttl_s)


class AuthMiddleware:
    """Resolve the bearer token of every ``/v1`` request before anything else runs."""

    def __init__(
        self,
        app: Any,
        session_factory: sessionmaker[Session],
        prefix: str = "/v1",
        cache_ttl_s: float = 0.0,
    ) -> None:
        self.app = app
        self.session_factory = session_factory
        self.prefix = prefix
        self.cache = TokenCache(cache_ttl_s)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == self.prefix or path.startswith(self.prefix + "/")
        ):
            await self.app(scope, receive, send)
            return
        plaintext = _bearer(scope.get("headers") or [])
        principal = None
        if plaintext and len(plaintext) <= 512:
            digest = hash_token(plaintext)
            principal = self.cache.get(digest)
            if principal is None:
                epoch = revocation_epoch()
                try:
                    principal = await anyio.to_thread.run_sync(
                        resolve_token, self.session_factory, plaintext
                    )
                except Exception as e:  # noqa: BLE001 - a 503 when the database is away, else a 500
                    await unexpected_response(e, scope["method"], path)(scope, receive, send)
                    return
                if principal is not None:
                    self.cache.put(digest, principal, epoch)
        if principal is None:
            detail = (
                "invalid or revoked token"
                if plaintext
                else "missing bearer token (Authorization: Bearer <token>)"
            )
            await problem_response(Unauthorized(detail))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _principal(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # only when the middleware is missing (an app built by hand)
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return principal


# Route guards take only the request: AuthMiddleware did the work, and each nested dependency
# costs FastAPI ~20 µs per request to solve. The bearer scheme is declared in the OpenAPI
# document by :func:`document_bearer_auth` instead of by a ``Depends(HTTPBearer)``.


def require_user(principal: Principal) -> Principal:
    """A user (or admin) token; a per-job worker token is refused."""
    if principal.job_id is not None:
        raise Forbidden("a job token can only call its job's worker routes")
    return principal


async def current_user(request: Request) -> Principal:
    return require_user(_principal(request))


async def current_admin(request: Request) -> Principal:
    principal = await current_user(request)
    if not principal.is_admin:
        raise Forbidden("this route needs an admin token")
    return principal


async def worker_for_job(job_id: int, request: Request) -> Principal:
    """The caller must hold the worker token minted for ``job_id``."""
    principal = _principal(request)
    if principal.job_id is None:
        raise Forbidden("worker routes need the job's own token (minted by the dispatcher)")
    if principal.job_id != job_id:
        raise Forbidden(f"this token belongs to job {principal.job_id}, not job {job_id}")
    return principal


BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "`Authorization: Bearer <token>` (densenas token create)",
}


def document_bearer_auth(schema: dict[str, Any], prefix: str = "/v1") -> dict[str, Any]:
    """Declare ``BearerToken`` on every operation under ``prefix`` (what AuthMiddleware
    enforces) in an OpenAPI document."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["BearerToken"] = (
        BEARER_SCHEME
    )
    for path, item in schema.get("paths", {}).items():
        if path == prefix or path.startswith(prefix + "/"):
            for operation in item.values():
                if isinstance(operation, dict):
                    operation["security"] = [{"BearerToken": []}]
    return schema


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(current_admin)]
JobWorker = Annotated[Principal, Depends(worker_for_job)]

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
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from .errors import Forbidden, Unauthorized, problem_response
from .models import Token
from .settings import Settings
from .tokens import find_token, hash_token, revocation_epoch

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="BearerToken",
                           description="`Authorization: Bearer <token>` (densenas token create)")


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    project: str
    is_admin: bool
    job_id: int | None = None

    @classmethod
    def of(cls, token: Token) -> "Principal":
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


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


def resolve_token(session_factory: sessionmaker[Session], plaintext: str | None
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

    def __init__(self, app: Any, session_factory: sessionmaker[Session],
                 prefix: str = "/v1", cache_ttl_s: float = 0.0) -> None:
        self.app = app
        self.session_factory = session_factory
        self.prefix = prefix
        self.cache = TokenCache(cache_ttl_s)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix
                                           or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        plaintext = _bearer(scope.get("headers") or [])
        principal = None
        if plaintext and len(plaintext) <= 512:
            digest = hash_token(plaintext)
            principal = self.cache.get(digest)
            if principal is None:
                epoch = revocation_epoch()
                principal = await anyio.to_thread.run_sync(resolve_token,
                                                           self.session_factory, plaintext)
                if principal is not None:
                    self.cache.put(digest, principal, epoch)
        if principal is None:
            detail = ("invalid or revoked token" if plaintext else
                      "missing bearer token (Authorization: Bearer <token>)")
            await problem_response(Unauthorized(detail))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def authenticate(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    # ``credentials`` only documents the scheme in OpenAPI; AuthMiddleware did the work.
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return principal


AnyPrincipal = Annotated[Principal, Depends(authenticate)]


async def current_user(principal: AnyPrincipal) -> Principal:
    if principal.job_id is not None:
        raise Forbidden("a job token can only call its job's worker routes")
    return principal


async def current_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this route needs an admin token")
    return principal


async def worker_for_job(job_id: int, principal: AnyPrincipal) -> Principal:
    """The caller must hold the worker token minted for ``job_id``."""
    if principal.job_id is None:
        raise Forbidden("worker routes need the job's own token (minted by the dispatcher)")
    if principal.job_id != job_id:
        raise Forbidden(f"this token belongs to job {principal.job_id}, not job {job_id}")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(current_admin)]
JobWorker = Annotated[Principal, Depends(worker_for_job)]

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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from .errors import Forbidden, Unauthorized, problem_response
from .models import Token
from .settings import Settings
from .tokens import find_token

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


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


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


class AuthMiddleware:
    """Resolve the bearer token of every ``/v1`` request before anything else runs."""

    def __init__(self, app: Any, session_factory: sessionmaker[Session],
                 prefix: str = "/v1") -> None:
        self.app = app
        self.session_factory = session_factory
        self.prefix = prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.prefix
                                           or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        plaintext = _bearer(scope.get("headers") or [])
        principal = await anyio.to_thread.run_sync(resolve_token, self.session_factory,
                                                   plaintext)
        if principal is None:
            detail = ("invalid or revoked token" if plaintext else
                      "missing bearer token (Authorization: Bearer <token>)")
            await problem_response(Unauthorized(detail))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def authenticate(request: Request, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    # ``credentials`` only documents the scheme in OpenAPI; AuthMiddleware did the work.
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return principal


AnyPrincipal = Annotated[Principal, Depends(authenticate)]


def current_user(principal: AnyPrincipal) -> Principal:
    if principal.job_id is not None:
        raise Forbidden("a job token can only call its job's worker routes")
    return principal


def current_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this route needs an admin token")
    return principal


def worker_for_job(job_id: int, principal: AnyPrincipal) -> Principal:
    """The caller must hold the worker token minted for ``job_id``."""
    if principal.job_id is None:
        raise Forbidden("worker routes need the job's own token (minted by the dispatcher)")
    if principal.job_id != job_id:
        raise Forbidden(f"this token belongs to job {principal.job_id}, not job {job_id}")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
AdminUser = Annotated[Principal, Depends(current_admin)]
JobWorker = Annotated[Principal, Depends(worker_for_job)]

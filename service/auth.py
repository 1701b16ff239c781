"""Who is calling: bearer tokens resolved to a :class:`Principal`, and the route guards.

Three kinds of caller: a user token sees its own project, an admin token sees every project and
may manage tokens, and a per-job worker token (minted by the dispatcher for one attempt) may only
call the worker routes of that one job — everything else answers 403 to it. Unknown, malformed
and revoked tokens are all the same 401, so the answer does not tell which one it was.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .errors import Forbidden, Unauthorized
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


def authenticate(session: SessionDep, credentials: Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    token = find_token(session, credentials.credentials)
    if token is None:
        raise Unauthorized("invalid or revoked token")
    principal = Principal.of(token)
    # End the read so the route's writes start a fresh transaction (SQLite: no stale snapshot).
    session.commit()
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

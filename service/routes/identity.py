"""Who am I, and token administration (admins only; plaintext is shown once at creation)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from ..auth import AdminUser, CurrentUser, SessionDep
from ..errors import NotFound
from ..models import Token, utcnow
from ..schemas import Me, TokenCreate, TokenCreated, TokenPublic, TokensPublic
from ..tokens import create_token_row, mark_revocation
from . import AUTH_ERRORS, RowId, problems

router = APIRouter(prefix="/v1", tags=["identity"])


@router.get("/me", response_model=Me, responses=problems(*AUTH_ERRORS))
async def me(principal: CurrentUser) -> Me:
    return Me(
        id=principal.token_id,
        name=principal.name,
        project=principal.project,
        is_admin=principal.is_admin,
        job_id=principal.job_id,
    )


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problems(*AUTH_ERRORS),
)
def create_token(body: TokenCreate, admin: AdminUser, session: SessionDep) -> TokenCreated:
    row, plaintext = create_token_row(session, body.name, body.project, body.admin)
    session.commit()
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=plaintext)


@router.get("/tokens", response_model=TokensPublic, responses=problems(*AUTH_ERRORS))
def list_tokens(
    admin: AdminUser, session: SessionDep, include_job_tokens: bool = False
) -> TokensPublic:
    q = select(Token).order_by(Token.id)
    if not include_job_tokens:
        q = q.where(Token.job_id.is_(None))
    return TokensPublic(data=[TokenPublic.model_validate(t) for t in session.scalars(q)])


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(*AUTH_ERRORS, 404),
)
def delete_token(token_id: RowId, admin: AdminUser, session: SessionDep) -> Response:
    """Revoke (the row stays for the audit trail; the token stops working at once)."""
    row = session.get(Token, token_id)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        mark_revocation(session)
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

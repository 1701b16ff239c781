"""API tokens: minted here, stored only as sha256, looked up by a short non-secret prefix.

A token is ``dn_`` + 43 url-safe characters (256 random bits), so a plain sha256 is enough (no
salt or slow hash is needed for high-entropy secrets) and the hash is unique. The first
:data:`PREFIX_LEN` characters are stored in clear to find the candidate row with an index; the
hash is then compared in constant time. Plaintext leaves this module exactly once, as the return
value of the function that minted it; nothing here logs it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from datetime import datetime
from pathlib import Path

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import Token, utcnow
from .settings import Settings

log = logging.getLogger(__name__)

TOKEN_PREFIX = "dn_"
PREFIX_LEN = 12


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def token_prefix(plaintext: str) -> str:
    return plaintext[:PREFIX_LEN]


def _add(
    session: Session, plaintext: str, *, name: str, project: str, admin: bool, job_id: int | None
) -> Token:
    row = Token(
        name=name,
        project=project,
        is_admin=admin,
        prefix=token_prefix(plaintext),
        token_hash=hash_token(plaintext),
        job_id=job_id,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def create_token(
    session: Session,
    name: str,
    project: str = "default",
    admin: bool = False,
    *,
    job_id: int | None = None,
) -> str:
    """Mint a token, add its hashed row to ``session`` (flushed, not committed) → plaintext.

    The caller owns the transaction: ``densenas token create`` commits right away, the
    dispatcher mints a job's token in the same transaction that claims the job.
    """
    plaintext = generate_token()
    _add(session, plaintext, name=name, project=project, admin=admin, job_id=job_id)
    return plaintext


def create_token_row(
    session: Session, name: str, project: str = "default", admin: bool = False
) -> tuple[Token, str]:
    """Like :func:`create_token` but also returns the row (the REST route shows its id)."""
    plaintext = generate_token()
    row = _add(session, plaintext, name=name, project=project, admin=admin, job_id=None)
    return row, plaintext


def find_token(session: Session, plaintext: str, now: datetime | None = None) -> Token | None:
    """The live token row for ``plaintext``, or None (unknown, malformed or revoked)."""
    if not plaintext or len(plaintext) > 512:
        return None
    digest = hash_token(plaintext)
    rows = session.scalars(select(Token).where(Token.prefix == token_prefix(plaintext))).all()
    match = None
    for row in rows:  # compare every candidate: timing does not reveal which one matched
        if hmac.compare_digest(row.token_hash, digest):
            match = row
    if match is None or match.revoked_at is not None:
        return None
    return match


def revoke_job_tokens(session: Session, job_id: int, now: datetime | None = None) -> None:
    """Invalidate the worker tokens of a job's earlier attempts (a zombie worker gets 401)."""
    session.execute(
        update(Token)
        .where(Token.job_id == job_id, Token.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    mark_revocation(session)


# -- revocation epoch (drops the verified-token caches of service.auth) ----------------------

_epoch = 0
_epoch_lock = threading.Lock()
_REVOKED = "densenas.tokens_revoked"


def revocation_epoch() -> int:
    """Bumped by every revocation made in this process; a cached token is only trusted while
    the epoch it was verified in is still current."""
    return _epoch


#: PostgreSQL channel on which a revocation tells the other API processes to drop their caches
#: (:meth:`service.signals.JobSignals.listen` calls :func:`bump_revocation_epoch`).
REVOCATIONS_CHANNEL = "densenas_tokens_revoked"


def bump_revocation_epoch() -> None:
    global _epoch
    with _epoch_lock:
        _epoch += 1


def mark_revocation(session: Session) -> None:
    """Call after changing ``revoked_at`` in ``session``: the epoch moves now and again when
    the session commits (a look-up that read the row before the commit cannot be cached
    under the new epoch); on PostgreSQL the commit also notifies the other processes."""
    bump_revocation_epoch()
    session.info[_REVOKED] = True
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(select(func.pg_notify(REVOCATIONS_CHANNEL, "")))


@event.listens_for(Session, "after_commit")
def _revocation_committed(session: Session) -> None:
    if session.info.pop(_REVOKED, False):
        bump_revocation_epoch()


def ensure_admin_token(
    settings: Settings, session_factory: sessionmaker[Session] | None = None
) -> Path | None:
    """On an empty tokens table, mint the first admin token and write it to the data dir.

    The file is created with mode 600 before the secret is written into it; only its path is
    logged. With ``settings.admin_token`` set (a deployment secret), that value becomes the
    admin token instead and no file is written. Returns the file path when one was written.
    """
    if session_factory is None:
        from .db import make_engine, make_session_factory

        engine = make_engine(settings.database_url)
        try:
            return ensure_admin_token(settings, make_session_factory(engine))
        finally:
            engine.dispose()

    with session_factory() as session:
        if session.scalar(select(func.count()).select_from(Token)):
            return None
        if settings.admin_token is not None:
            _add(
                session,
                settings.admin_token.get_secret_value(),
                name="admin",
                project="default",
                admin=True,
                job_id=None,
            )
            session.commit()
            log.info("admin token taken from DENSENAS_ADMIN_TOKEN")
            return None
        plaintext = generate_token()
        path = settings.admin_token_path
        _write_secret(path, plaintext)
        _add(session, plaintext, name="admin", project="default", admin=True, job_id=None)
        session.commit()
    log.info("minted the bootstrap admin token; it is in %s", path)
    return path


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)

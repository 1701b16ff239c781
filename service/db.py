"""Engines, sessions and migrations for both supported databases.

SQLite is the embedded default (one file, one machine): WAL lets the SSE readers run while the
dispatcher writes, ``busy_timeout`` turns writer contention into waiting instead of
``database is locked``, and foreign keys are off by default in SQLite so they are switched on
per connection. PostgreSQL is the production database: ``pool_pre_ping`` survives server
restarts and idle-connection reaping between dispatcher ticks.

The schema changes only through Alembic; :func:`run_migrations` runs ``upgrade head`` from code
so ``serve`` (and every test) starts on the current schema without a separate step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

_migrate_lock = threading.Lock()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(
    url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 20
) -> Engine:
    if is_sqlite(url):
        u = make_url(url)
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_size covers the concurrent requests of one worker: QueuePool closes an overflow
    # connection on check-in, so a pool smaller than the usual concurrency opens (and tears
    # down) a PostgreSQL connection per request under load.
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
    )


def psycopg_conninfo(url: str) -> str:
    """A libpq connection string for a ``postgresql+psycopg://`` URL (for the connections
    this service opens with psycopg directly: :mod:`service.reads`, :mod:`service.signals`)."""
    from psycopg.conninfo import make_conninfo

    u = make_url(url)
    parts = {
        "host": u.host,
        "port": u.port,
        "user": u.username,
        "password": u.password,
        "dbname": u.database,
        **{k: v for k, v in u.query.items() if isinstance(v, str)},
    }
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: routes serialize rows after committing the transition.
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):  # -> alembic.config.Config (imported lazily: start-up cost)
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax; passwords may contain it.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["embedded"] = True
    return cfg


def run_migrations(url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` from code (idempotent: a no-op when already there)."""
    from alembic import command

    with _migrate_lock:
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    with _migrate_lock:
        command.downgrade(alembic_config(url), revision)


def check_database(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query (used by ``/healthz``)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

"""Alembic environment: runs against service.models' metadata on SQLite or PostgreSQL.

Batch mode is on so SQLite (which cannot ALTER most things) gets table rebuilds; the comparison
options are the ones the drift test uses, so ``alembic revision --autogenerate`` and the test
agree on what counts as a difference.
"""

from __future__ import annotations

import logging.config
import os

from alembic import context

from service.db import make_engine
from service.models import Base

config = context.config
#: service.db sets this when it runs migrations from code: keep the app's logging and URL.
EMBEDDED = config.attributes.get("embedded", False)
if config.config_file_name and not EMBEDDED:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    if not EMBEDDED and os.environ.get("DENSENAS_DATABASE_URL"):
        return os.environ["DENSENAS_DATABASE_URL"]  # command-line use
    return config.get_main_option("sqlalchemy.url")


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        **kw,
    )


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # a caller handed us its connection (tests)
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

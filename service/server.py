"""Run the control plane: one uvicorn worker (the dispatcher is a thread of that process;
several API workers would each start one)."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from .settings import Settings

ACCESS_LOGGER = "uvicorn.access"
REDACTED_QUERY = "?[redacted]"


class RedactQueryStrings(logging.Filter):
    """Access log lines keep a request's path and drop its query string: a token or other
    secret someone put in a URL must not land in the log. uvicorn logs the path with its query
    as one ``%s`` argument (``'%s - "%s %s HTTP/%s" %d'``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(a) for a in record.args)
        return True


def _without_query(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.partition("?")[0] + REDACTED_QUERY
    return value


def redact_access_log(logger: logging.Logger | None = None) -> None:
    """Install :class:`RedactQueryStrings` on uvicorn's access logger (once)."""
    logger = logger or logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryStrings) for f in logger.filters):
        logger.addFilter(RedactQueryStrings())


class Server(uvicorn.Server):
    """Ends open SSE streams as soon as shutdown starts; they would otherwise hold the
    graceful shutdown until its timeout. Its access log never shows query strings."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)  # the config has configured logging by now
        self._app = app
        redact_access_log()

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.state.stopping.set()
        super().handle_exit(sig, frame)


def serve(settings: Settings | None = None) -> None:
    from .app import create_app

    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )
    Server(config, app).run()

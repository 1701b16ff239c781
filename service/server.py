"""Run the control plane: one uvicorn worker (the dispatcher is a thread of that process;
several API workers would each start one)."""
from __future__ import annotations

import logging
from typing import Any

import uvicorn
from fastapi import FastAPI

from .settings import Settings


class Server(uvicorn.Server):
    """Ends open SSE streams as soon as shutdown starts; they would otherwise hold the
    graceful shutdown until its timeout."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.state.stopping.set()
        super().handle_exit(sig, frame)


def serve(settings: Settings | None = None) -> None:
    from .app import create_app

    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, workers=1,
                            log_level=settings.log_level.lower(), proxy_headers=True,
                            timeout_graceful_shutdown=5)
    Server(config, app).run()

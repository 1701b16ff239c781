"""The FastAPI application factory.

``create_app(settings, executor)`` wires one process: an engine and session factory, the
metrics registry, routers, problem+json error handlers and the body-size limit. Its lifespan
runs the migrations (the schema is always at head before the first request), mints the
bootstrap admin token on an empty database, and starts the dispatcher — when an executor is
injected (tests) or configured (``DENSENAS_EXECUTOR`` ≠ ``none``) — stopping it on shutdown.
"""
from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from . import __version__
from .db import make_engine, make_session_factory, run_migrations
from .auth import AuthMiddleware
from .dispatcher import Dispatcher
from .errors import install_error_handlers
from .limits import BodySizeLimitMiddleware
from .metrics import Metrics, RequestMetricsMiddleware
from .routes import architectures, catalog, events, health, identity, jobs, worker
from .runtime import Executor, make_executor
from .settings import Settings
from .tokens import ensure_admin_token

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, executor: Executor | None = None, *,
               dispatcher_options: dict | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    metrics = Metrics(session_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations:
            await anyio.to_thread.run_sync(run_migrations, settings.database_url)
        await anyio.to_thread.run_sync(ensure_admin_token, settings, session_factory)
        owned = None
        ex = executor
        if ex is None and settings.executor != "none":
            ex = owned = await anyio.to_thread.run_sync(make_executor, settings)
        if ex is not None:
            app.state.dispatcher = Dispatcher(session_factory, ex, settings, metrics=metrics,
                                              **(dispatcher_options or {}))
            app.state.dispatcher.start()
        try:
            yield
        finally:
            app.state.stopping.set()
            if app.state.dispatcher is not None:
                await anyio.to_thread.run_sync(app.state.dispatcher.stop)
                app.state.dispatcher = None
            if owned is not None:
                await anyio.to_thread.run_sync(owned.shutdown)
            engine.dispose()

    app = FastAPI(title="DenseNAS control plane", version=__version__, lifespan=lifespan,
                  description="Jobs (search, retrain, profile), their live events, the "
                              "architectures and latency tables they produce. "
                              "Errors are RFC 7807 application/problem+json.")
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.metrics = metrics
    app.state.dispatcher = None
    app.state.stopping = threading.Event()

    install_error_handlers(app)
    for module in (health, jobs, events, worker, architectures, catalog, identity):
        app.include_router(module.router)
    _mount_dashboard(app)
    # The last added runs first: metrics see everything, then authentication (401 before
    # anything else about the request is looked at), then the body size limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_payload_bytes)
    app.add_middleware(AuthMiddleware, session_factory=session_factory,
                       cache_ttl_s=settings.token_cache_s)
    app.add_middleware(RequestMetricsMiddleware, metrics=lambda: app.state.metrics)
    return app


def _mount_dashboard(app: FastAPI) -> None:
    """Include ``service.dashboard.router`` (pages at ``/``) when that package is present."""
    try:
        module = importlib.import_module("service.dashboard")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("service.dashboard"):
            return
        raise
    router = getattr(module, "router", None)
    if router is not None:
        app.include_router(router)

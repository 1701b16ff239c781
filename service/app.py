"""The FastAPI application factory.

``create_app(settings, executor)`` wires one process: an engine and session factory, the
metrics registry, routers, problem+json error handlers and the body-size limit. Its lifespan
runs the migrations (the schema is always at head before the first request), mints the
bootstrap admin token on an empty database, and starts the dispatcher — when an executor is
injected (tests) or configured (``DENSENAS_EXECUTOR`` ≠ ``none``) — stopping it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from . import __version__
from .auth import AuthMiddleware, document_bearer_auth
from .db import make_engine, make_session_factory, psycopg_conninfo, run_migrations
from .dispatcher import Dispatcher
from .errors import install_error_handlers
from .hotpath import JobReadFastPath
from .limits import BodySizeLimitMiddleware
from .metrics import Metrics, RequestMetricsMiddleware
from .reads import Reader
from .routes import (
    architectures,
    catalog,
    cluster,
    events,
    health,
    identity,
    jobinfo,
    jobs,
    sweeps,
    worker,
)
from .runtime import Executor, make_executor
from .settings import Settings
from .signals import JobSignals, StopFlag
from .tokens import ensure_admin_token

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    executor: Executor | None = None,
    *,
    dispatcher_options: dict | None = None,
) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    reader = Reader(settings.database_url, engine)
    signals = JobSignals()
    signals.install(session_factory)
    metrics = Metrics(session_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations:
            await anyio.to_thread.run_sync(run_migrations, settings.database_url)
        await anyio.to_thread.run_sync(ensure_admin_token, settings, session_factory)
        await reader.open()
        signals.bind(asyncio.get_running_loop())
        listener = None
        if engine.dialect.name == "postgresql":
            listener = asyncio.create_task(signals.listen(psycopg_conninfo(settings.database_url)))
        owned = None
        ex = executor
        if ex is None and settings.executor != "none":
            ex = owned = await anyio.to_thread.run_sync(make_executor, settings)
        if ex is not None:
            app.state.dispatcher = Dispatcher(
                session_factory, ex, settings, metrics=metrics, **(dispatcher_options or {})
            )
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
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            signals.bind(None)
            await reader.close()
            engine.dispose()

    # Swagger UI from the package's own static files: /docs works offline and on a cluster
    # without internet (FastAPI's default pages load it from a CDN). No ReDoc: its bundle
    # fetches a logo from cdn.redoc.ly.
    app = FastAPIOffline(
        title="DenseNAS control plane",
        version=__version__,
        lifespan=lifespan,
        redoc_url=None,
        description="Jobs (search, retrain, profile), their live events, "
        "the architectures and latency tables they produce. "
        "Errors are RFC 7807 application/problem+json.",
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.reader = reader
    app.state.signals = signals
    app.state.metrics = metrics
    app.state.dispatcher = None
    app.state.stopping = StopFlag(signals)

    install_error_handlers(app)
    _declare_bearer_auth(app)
    for module in (
        health,
        jobs,
        jobinfo,
        events,
        worker,
        architectures,
        catalog,
        identity,
        cluster,
        sweeps,
    ):
        app.include_router(module.router)
    app.include_router(events.multi_router)
    _mount_dashboard(app)
    # The last added runs first: metrics see everything, then authentication (401 before
    # anything else about the request is looked at), then the body size limit.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_payload_bytes)
    if settings.hot_path:
        app.add_middleware(JobReadFastPath, reader=lambda: app.state.reader)
    app.add_middleware(
        AuthMiddleware, session_factory=session_factory, cache_ttl_s=settings.token_cache_s
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=lambda: app.state.metrics)
    return app


def _declare_bearer_auth(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document_bearer_auth(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


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

"""Prometheus metrics for the control plane, on a registry per app (tests build many apps).

Job counts by state and the queue depth are computed from the database at scrape time (a
collector), so they are right after a restart and across several API replicas; claim latency,
request latency and ingested events are measured in-process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .jobs.states import JobStatus
from .models import Job, utcnow

log = logging.getLogger(__name__)


class _JobsCollector:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory

    def describe(self) -> list[Any]:
        return []

    def collect(self):
        try:
            with self._sessions() as s:
                counts = dict(
                    s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                )
                depth = (
                    s.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.status == JobStatus.QUEUED, Job.scheduled_at <= utcnow())
                    )
                    or 0
                )
        except Exception as e:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("metrics: cannot read job counts: %s", e)
            return
        jobs = GaugeMetricFamily("densenas_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "densenas_queue_depth", "Queued jobs whose scheduled time has come", value=depth
        )


class Metrics:
    def __init__(self, session_factory: sessionmaker[Session] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.claim_wait = Histogram(
            "densenas_claim_wait_seconds",
            "Time a job waited between runnable and claimed",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.claim_duration = Histogram(
            "densenas_claim_duration_seconds",
            "Duration of one claim transaction",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.request_latency = Histogram(
            "densenas_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=r,
        )
        self.events_ingested = Counter(
            "densenas_events_ingested", "Worker events received", ["result"], registry=r
        )
        self.jobs_started = Counter(
            "densenas_jobs_started", "Attempts handed to the executor", ["outcome"], registry=r
        )
        self.workers_lost = Counter(
            "densenas_workers_lost", "Running jobs whose worker was gone", registry=r
        )
        self.watchdog = Counter(
            "densenas_watchdog_stalled",
            "Running attempts the progress watchdog ended (heartbeating, no step for too long)",
            registry=r,
        )
        self.swept_groups = Counter(
            "densenas_swept_placement_groups",
            "Placement groups the dispatcher's sweep removed "
            "(left behind by an attempt that ended without releasing them)",
            registry=r,
        )
        if session_factory is not None:
            r.register(_JobsCollector(session_factory))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetricsMiddleware:
    """Pure ASGI (streaming-safe, unlike BaseHTTPMiddleware): latency by route *template*, so
    ``/v1/jobs/1`` and ``/v1/jobs/2`` are one series."""

    def __init__(self, app: Any, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def _send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            m = self._metrics()
            if m is not None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                m.request_latency.labels(scope["method"], template, str(status[0])).observe(
                    time.perf_counter() - start
                )

"""The dispatcher: one background thread that turns queued jobs into running attempts and
notices attempts whose worker is gone.

Each tick it

1. **reaps**: running jobs whose heartbeat is older than ``heartbeat_timeout_s`` are checked with
   ``executor.alive(job_id)``. A live worker is kept (its heartbeat is refreshed: the executor
   vouches for it); a dead one ends the attempt — retried with backoff while attempts remain,
   failed with "worker lost (heartbeat stale since …)" after that, cancelled if a cancel was
   pending;
2. **watches progress** (:mod:`service.watchdog`): a running attempt that keeps heartbeating
   but reports no ``step`` for too long ends like a lost worker, with "no progress: no step for
   …" as its error, and the executor is told to kill its worker (a hung one ignores a cancel);
3. **claims** runnable jobs (``scheduled_at <= now``, priority first, FIFO within) — see
   :func:`service.jobs.claim` — minting each a job token in the claiming transaction, builds the
   launch payload and calls ``executor.start``. A start that raises ends the attempt with
   "executor failed to start the job: …", retried like any failed attempt.

On start it **reconciles**: every running job is checked at once (not after the heartbeat
timeout), so nothing is left orphaned by a control-plane restart, and a Ray worker that survived
the restart is re-attached. The reconcile assumes one dispatcher per deployment (or executors
that see every worker, as Ray does); the claim itself is safe with any number of dispatchers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from . import capacity, jobs, sweeps
from .errors import Conflict, NotFound
from .metrics import Metrics
from .models import Architecture, Job, JobEvent, LatencyTable, utcnow
from .retry import RetryPolicy
from .runtime import Executor
from .schemas import worker_spec
from .settings import Settings
from .watchdog import Watchdog

log = logging.getLogger(__name__)

#: The most jobs one claim takes when the executor tells the cluster's capacity: the free
#: resources and the queue's depth size each claim up to this (docs/capacity.md).
MAX_CLAIM = 256


@dataclass
class TickReport:
    started: list[int] = field(default_factory=list)
    start_failed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    stalled: list[int] = field(default_factory=list)


def build_payload(session: Session, job: Job, token: str, settings: Settings) -> Any:
    """The launch payload of docs/DESIGN.md (``workers.payload.JobPayload``)."""
    from workers.payload import JobPayload

    architecture = latency_table = None
    if job.kind == "retrain":
        arch = session.get(Architecture, job.architecture_id) if job.architecture_id else None
        if arch is None:
            raise ValueError(f"architecture {job.architecture_id} no longer exists")
        architecture = arch.doc
    if job.latency_table_id is not None:
        table = session.get(LatencyTable, job.latency_table_id)
        if table is None:
            raise ValueError(f"latency table {job.latency_table_id} no longer exists")
        latency_table = table.doc
    trials = None
    if job.kind == "sweep":
        sweeps.requeue_unfinished(session, job, utcnow())
        trials = sweeps.launch_trials(session, job)
    return JobPayload(
        job_id=job.id,
        kind=job.kind,
        attempt=job.attempt,
        spec=dict(job.spec) if job.kind == "sweep" else worker_spec(job.kind, job.spec),
        trials=trials,
        api_url=settings.public_url.rstrip("/"),
        job_token=token,
        storage_path=settings.job_storage_path(job.id),
        architecture=architecture,
        latency_table=latency_table,
    )


class Dispatcher:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        executor: Executor,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        reconcile_on_start: bool = True,
    ) -> None:
        self.sessions = session_factory
        self.executor = executor
        self.settings = settings
        self.metrics = metrics
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.policy = RetryPolicy.from_settings(settings)
        self.watchdog = Watchdog.from_settings(settings)
        self.reconcile_on_start = reconcile_on_start
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._next_sweep = 0.0
        #: The last claim took a full chunk: the queue may hold more, claim again at once.
        self._more = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="densenas-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Run a tick now (a job was just queued) instead of at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        if self.reconcile_on_start:
            try:
                self.reconcile()
            except Exception:
                log.exception("dispatcher: reconcile failed")
        while not self._stop.is_set():
            try:
                self.tick()
                # A deep queue: claim the next chunk at once (one poll interval of claims at
                # most before reaping and watching again), not after the poll interval.
                until = time.monotonic() + self.settings.poll_interval_s
                while self._more and not self._stop.is_set() and time.monotonic() < until:
                    self.dispatch()
            except Exception:  # keep dispatching; a bad tick must not kill the thread
                self._more = False
                log.exception("dispatcher: tick failed")
            if not self._more:
                self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    # -- one round ---------------------------------------------------------------------------
    def tick(self) -> TickReport:
        report = TickReport()
        self.reap(report)
        self.watch(report)
        self.sweep()
        self.dispatch(report)
        return report

    def sweep(self, force: bool = False) -> Any:
        """Every ``sweep_interval_s``: let the executor remove placement groups and job actors
        that no running attempt owns, however that attempt ended (its controller killed, its
        job actor gone, a cancel while it waited for resources). Executors without leftovers
        (inline) have no ``sweep``."""
        sweep = getattr(self.executor, "sweep", None)
        now = time.monotonic()
        if sweep is None or (not force and now < self._next_sweep):
            return None
        self._next_sweep = now + self.settings.sweep_interval_s
        with self.sessions() as s:
            running = jobs.running_attempts(s)
        try:
            swept = sweep(running)
        except Exception as e:  # noqa: BLE001 - logged; the next tick sweeps again
            log.warning("dispatcher: executor sweep failed: %s", e)
            return None
        if swept.groups_removed or swept.actors_killed:
            log.warning(
                "dispatcher: swept %d placement group(s) (%g CPU) and job actor(s) %s "
                "that no running attempt owned",
                swept.groups_removed,
                swept.cpus_released,
                swept.actors_killed,
            )
        if self.metrics:
            self.metrics.swept_groups.inc(swept.groups_removed)
        return swept

    def reconcile(self) -> TickReport:
        """Check every running job now: re-attach live workers, end lost attempts."""
        report = TickReport()
        t0 = time.perf_counter()
        with self.sessions() as s:
            running = jobs.all_running(s)
        for job in self._kept_at_once(running, report, restarted=True):
            self._check(job, report, restarted=True)
        if running:
            log.info(
                "dispatcher: reconciled %d running job(s) in %.2f s: %d kept, %d lost",
                len(running),
                time.perf_counter() - t0,
                len(report.kept),
                len(report.lost),
            )
        return report

    def reap(self, report: TickReport | None = None) -> TickReport:
        report = report or TickReport()
        cutoff = self.clock() - timedelta(seconds=self.settings.heartbeat_timeout_s)
        with self.sessions() as s:
            stale = jobs.stale_running(s, cutoff)
        for job in self._kept_at_once(stale, report, restarted=False):
            self._check(job, report, restarted=False)
        return report

    def _kept_at_once(
        self, running: list[Job], report: TickReport, *, restarted: bool
    ) -> list[Job]:
        """Where the executor answers for many jobs at once (``alive_many(ids) -> set``: one
        listing of Ray's named actors instead of one ``get_actor`` per job), keep the plain
        jobs it sees alive in one transaction (heartbeat refreshed; a ``reattached`` event
        each after a restart) → the jobs left for the one-by-one check (:meth:`_check`):
        those it does not see, those with a cancel pending, a sweep and its trials, or all of
        them when the executor cannot answer so."""
        alive_many = getattr(self.executor, "alive_many", None)
        if alive_many is None or not running:
            return running
        try:
            alive = set(alive_many([job.id for job in running]))
        except Exception as e:  # noqa: BLE001 - judged one by one (with its grace) instead
            log.warning("dispatcher: executor.alive_many failed: %s", e)
            return running
        keep = [
            j.id
            for j in running
            if j.id in alive
            and not j.cancel_requested
            and j.parent_id is None
            and j.kind != "sweep"
        ]
        if keep:
            with self.sessions() as s:
                kept = jobs.touch_many(
                    s, keep, self.clock(), event={"dispatcher": self.name} if restarted else None
                )
            report.kept.extend(kept)
        done = set(keep)
        return [j for j in running if j.id not in done]

    def _check(self, job: Job, report: TickReport, *, restarted: bool) -> None:
        now = self.clock()
        try:
            # A sweep's trial has no worker of its own to ask about: it runs inside its
            # sweep's, and heartbeats itself — stale means its trial process is gone.
            if job.parent_id is not None:
                alive: bool | None = restarted and bool(self.executor.alive(job.parent_id))
            else:
                alive = bool(self.executor.alive(job.id))
        except Exception as e:  # noqa: BLE001 - cannot tell: judged by the last heartbeat below
            log.warning("dispatcher: executor.alive(%s) failed: %s", job.id, e)
            alive = None
        beat = job.heartbeat_at or job.started_at or job.updated_at
        if alive is None:
            # Cannot tell (executor unreachable): give it three timeouts before declaring loss.
            grace = timedelta(seconds=3 * self.settings.heartbeat_timeout_s)
            if beat is not None and now - beat < grace:
                return
            alive = False
        with self.sessions() as s:
            try:
                if alive:
                    if job.cancel_requested:
                        self._hard_cancel(job.id)
                    jobs.touch(s, job.id, now)
                    if restarted:
                        s.add(
                            JobEvent(
                                job_id=job.id,
                                type="reattached",
                                data={"dispatcher": self.name},
                                created_at=now,
                            )
                        )
                        s.commit()
                    report.kept.append(job.id)
                    return
                since = beat.isoformat() if beat is not None else "the claim"
                why = "control plane restarted; " if restarted else ""
                jobs.worker_lost(
                    s, job.id, self.policy, f"worker lost ({why}heartbeat stale since {since})", now
                )
                report.lost.append(job.id)
                if self.metrics:
                    self.metrics.workers_lost.inc()
            except (Conflict, NotFound):
                pass  # it completed (or vanished) while we looked: nothing to do

    def watch(self, report: TickReport | None = None) -> TickReport:
        """End running attempts that heartbeat without progress (one read of running jobs)."""
        report = report or TickReport()
        if not self.watchdog.enabled:
            return report
        now = self.clock()
        with self.sessions() as s:
            rows = jobs.running_started_before(s, now - timedelta(seconds=self.watchdog.earliest_s))
        for row in rows:
            if (
                row.id in report.lost
                or self.watchdog.stall(
                    row.attempt, row.started_at, row.heartbeat_at, row.progress, now
                )
                is None
            ):
                continue
            with self.sessions() as s:
                try:
                    reason = jobs.end_stalled(
                        s, row.id, row.attempt, self.watchdog, self.policy, now
                    )
                except (Conflict, NotFound):
                    reason = None  # it ended (or vanished) while we looked
            if reason is None:
                continue
            log.warning("dispatcher: job %s attempt %s: %s", row.id, row.attempt, reason)
            self._hard_cancel(row.id, kill=True)
            report.stalled.append(row.id)
            if self.metrics:
                self.metrics.watchdog.inc()
        return report

    def _hard_cancel(self, job_id: int, *, kill: bool = False) -> None:
        """Tell the executor to stop the job's worker; ``kill``: at once where the executor can
        (``kill(job_id)``, Ray), for a worker too stuck to honour a cancel."""
        stop = getattr(self.executor, "kill", None) if kill else None
        try:
            (stop or self.executor.cancel)(job_id)
        except Exception as e:  # noqa: BLE001 - logged; the watchdog and the sweep still apply
            log.warning("dispatcher: stopping the worker of job %s failed: %s", job_id, e)

    def _capacity(self, s: Session) -> int:
        """How many jobs this tick may claim: with an executor that tells the cluster's
        capacity (Ray), up to :data:`MAX_CLAIM` — the free resources and the queue then size
        the claim (:meth:`_fitting`); without one (inline: every job a thread of this
        process), ``claim_batch``; never past ``max_running_jobs``."""
        has_capacity = getattr(self.executor, "capacity", None) is not None
        limit = MAX_CLAIM if has_capacity else self.settings.claim_batch
        if self.settings.max_running_jobs:
            running = (
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.status == jobs.JobStatus.RUNNING)
                )
                or 0
            )
            limit = min(limit, self.settings.max_running_jobs - running)
        return limit

    def _fitting(self, s: Session, now: datetime, limit: int) -> list[int] | None:
        """Ids of the runnable jobs that fit the cluster now (service.capacity), or None where
        the executor has no capacity to tell (inline): then any job may be claimed."""
        total_of = getattr(self.executor, "capacity", None)
        if total_of is None:
            return None
        candidates = [(i, capacity.demand(k, sp)) for i, k, sp in jobs.runnable(s, now, limit)]
        if not candidates:  # an idle queue: no need to ask Ray or read the running specs
            return []
        try:
            total = total_of()
        except Exception as e:  # noqa: BLE001 - capacity unknown: claim nothing this tick
            log.warning("dispatcher: executor capacity unknown (%s); claiming nothing", e)
            return []
        if total is None:
            return None
        free = capacity.free_resources(
            total, (capacity.demand(k, sp) for k, sp in jobs.running_specs(s))
        )
        ids = capacity.plan_claims(candidates, free, limit)
        if not ids:
            log.debug(
                "dispatcher: job %s waits for resources (needs %s, free %s)",
                candidates[0][0],
                candidates[0][1],
                free,
            )
        return ids

    def dispatch(self, report: TickReport | None = None) -> TickReport:
        report = report or TickReport()
        now = self.clock()
        self._more = False
        with self.sessions() as s:
            if getattr(self.executor, "capacity", None) is not None:
                # dispatchers of one database plan against the same free resources: one at a
                # time, from reading what runs to committing the claim (PostgreSQL)
                jobs.lock_claims(s)
            limit = self._capacity(s)
            if limit <= 0:
                return report
            t0 = time.perf_counter()
            ids = self._fitting(s, now, limit)
            claimed = jobs.claim(s, self.name, limit, now, ids=ids)
            self._more = len(claimed) >= limit
            if self.metrics:
                self.metrics.claim_duration.observe(time.perf_counter() - t0)
            for job, token in claimed:
                if self.metrics:
                    self.metrics.claim_wait.observe(
                        max(0.0, (now - job.scheduled_at).total_seconds())
                    )
                self._launch(s, job, token, report)
        return report

    def _launch(self, s: Session, job: Job, token: str, report: TickReport) -> None:
        try:
            payload = build_payload(s, job, token, self.settings)
            s.commit()  # end the read: no transaction stays open while the executor works
            self.executor.start(payload)
        except Exception as e:  # noqa: BLE001 - a failed start fails that attempt, not the tick
            log.warning("dispatcher: job %s failed to start: %s", job.id, e)
            try:
                jobs.fail_to_start(s, job.id, f"{type(e).__name__}: {e}", self.policy, self.clock())
            except (Conflict, NotFound):
                pass
            report.start_failed.append(job.id)
            if self.metrics:
                self.metrics.jobs_started.labels("error").inc()
            return
        report.started.append(job.id)
        if self.metrics:
            self.metrics.jobs_started.labels("ok").inc()

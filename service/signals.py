"""Wake a job's live event streams when its events are committed, instead of at the next poll.

Every write of ``job_events`` rows goes through a :class:`~sqlalchemy.orm.Session` of the
process's session factory: ORM-added :class:`~service.models.JobEvent` rows are seen by a flush
hook, and the bulk insert of reported events calls :func:`mark_events`. When that session
commits, :class:`JobSignals` sets the wake-up of every SSE stream following those jobs on this
process (from any thread: the dispatcher and the sync routes run in threads).

Several API replicas share one PostgreSQL: the same marks also send
``pg_notify('densenas_events', '<origin>:<ids>')`` inside the writing transaction (delivered on
commit, dropped on rollback), and :meth:`JobSignals.listen` — one ``LISTEN`` connection per
process — wakes the streams of the other replicas. SQLite is one process, so it needs no more.
The streams still poll (``DENSENAS_SSE_POLL_S``): a lost wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from .models import Job, JobEvent
from .tokens import REVOCATIONS_CHANNEL, bump_revocation_epoch

log = logging.getLogger(__name__)

CHANNEL = "densenas_events"
_KEY = "densenas_event_jobs"
_LOCKED = "densenas_event_logs_locked"
_MAX_PAYLOAD = 7000
#: Payload for "events of more jobs than a notification can name": every stream wakes.
ALL = "*"


def lock_event_logs(session: Session, job_ids: Iterable[int]) -> None:
    """Call before inserting ``job_events`` rows of ``job_ids``: on PostgreSQL, take those
    jobs' row locks (held to the end of the transaction) unless this transaction has them.

    Event ids come from a sequence, so two transactions writing one job's events could commit
    out of id order, and a stream that has read past the later id would never see the earlier
    rows. Every writer of a job's events holds the job's row lock from before its ids are
    drawn until it commits (the state transitions update the row first anyway), so one job's
    event ids commit in order and ``id > last`` never skips one. SQLite has one writer at a
    time, which gives the same order."""
    if session.get_bind().dialect.name != "postgresql":
        return
    held = session.info.setdefault(_LOCKED, set())
    need = sorted(set(job_ids) - held)
    if need:
        session.connection().execute(
            select(Job.id).where(Job.id.in_(need)).order_by(Job.id).with_for_update()
        )
        held.update(need)


def event_logs_locked(session: Session, job_ids: Iterable[int]) -> None:
    """The caller holds these jobs' row locks already (it read them ``FOR UPDATE``)."""
    session.info.setdefault(_LOCKED, set()).update(job_ids)


@event.listens_for(Session, "before_flush")
def _lock_before_insert(session: Session, _ctx: Any, _instances: Any) -> None:
    lock_event_logs(session, {o.job_id for o in session.new if isinstance(o, JobEvent)})


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _locks_released(session: Session) -> None:
    session.info.pop(_LOCKED, None)


def mark_events(session: Session, job_ids: Iterable[int]) -> None:
    """Note that this transaction writes events of ``job_ids`` (wake-ups follow its commit)."""
    ids = set(job_ids)
    if not ids:
        return
    origin = session.info.get("densenas_origin")
    marked = session.info.setdefault(_KEY, set())
    new = ids - marked
    marked |= ids
    if new and origin is not None and session.get_bind().dialect.name == "postgresql":
        payload = f"{origin}:{','.join(map(str, sorted(new)))}"
        if len(payload) > _MAX_PAYLOAD:  # PostgreSQL refuses payloads of 8,000 bytes or more
            payload = f"{origin}:{ALL}"
        session.connection().execute(select(func.pg_notify(CHANNEL, payload)))


class StopFlag(threading.Event):
    """``app.state.stopping``: setting it also wakes the waiting streams, which then end."""

    def __init__(self, signals: JobSignals) -> None:
        super().__init__()
        self._signals = signals

    def set(self) -> None:
        super().set()
        self._signals.notify_all_threadsafe()


class JobSignals:
    def __init__(self) -> None:
        self.origin = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: dict[int, set[asyncio.Event]] = {}

    # -- the writing side ------------------------------------------------------------------

    def install(self, factory: sessionmaker[Session]) -> None:
        """Hook the sessions of ``factory``: their commits wake this process's streams."""
        factory.kw.setdefault("info", {})["densenas_origin"] = self.origin

        @event.listens_for(factory, "after_flush")
        def _flushed(session: Session, _ctx: Any) -> None:
            mark_events(session, {o.job_id for o in session.new if isinstance(o, JobEvent)})

        @event.listens_for(factory, "after_commit")
        def _committed(session: Session) -> None:
            ids = session.info.pop(_KEY, None)
            if ids:
                self.notify_threadsafe(ids)

        @event.listens_for(factory, "after_soft_rollback")
        def _rolled_back(session: Session, _previous: Any) -> None:
            session.info.pop(_KEY, None)

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The event loop the streams run on (set by the app's lifespan)."""
        self._loop = loop

    def notify_threadsafe(self, job_ids: Iterable[int]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.notify(job_ids)
        else:
            loop.call_soon_threadsafe(self.notify, list(job_ids))

    def notify(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            for wake in self._subscribers.get(job_id, ()):
                wake.set()

    def notify_all_threadsafe(self) -> None:
        """Wake every stream (shutting down: they see the stop flag and end)."""
        self.notify_threadsafe(list(self._subscribers))

    # -- the streaming side ----------------------------------------------------------------

    @contextmanager
    def subscribe(self, job_ids: Iterable[int]) -> Iterator[asyncio.Event]:
        """An event set whenever the events of any of ``job_ids`` may have changed; clear it
        *before* each read so that a commit during the read is not lost."""
        wake = asyncio.Event()
        ids = list(job_ids)
        for job_id in ids:
            self._subscribers.setdefault(job_id, set()).add(wake)
        try:
            yield wake
        finally:
            for job_id in ids:
                subs = self._subscribers.get(job_id)
                if subs is not None:
                    subs.discard(wake)
                    if not subs:
                        del self._subscribers[job_id]

    def received(self, channel: str, payload: str) -> None:
        """One notification from PostgreSQL (ours come back too, and are skipped)."""
        if channel == REVOCATIONS_CHANNEL:
            bump_revocation_epoch()
            return
        origin, _, ids = payload.partition(":")
        if origin == self.origin:
            return
        if ids == ALL:
            self.notify(list(self._subscribers))
            return
        try:
            job_ids = [int(i) for i in ids.split(",") if i]
        except ValueError:  # not ours (another version, a hand-made NOTIFY): wake everything
            log.warning("event notification with an unreadable payload: %.100r", payload)
            job_ids = list(self._subscribers)
        self.notify(job_ids)

    async def listen(self, conninfo: str) -> None:
        """Forward other replicas' ``pg_notify`` to this process's streams, and their token
        revocations to this process's token cache, until cancelled; reconnects (1 s, then up
        to 30 s apart) when PostgreSQL goes away."""
        import psycopg

        delay = 1.0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {REVOCATIONS_CHANNEL}")
                    # Revocations made while this connection was down were not heard.
                    bump_revocation_epoch()
                    delay = 1.0
                    async for note in conn.notifies():
                        self.received(note.channel, note.payload)
                reason = "the connection ended"
            except Exception as e:  # noqa: BLE001 — the listener must outlive any failure
                reason = repr(e)
            log.warning("event notifications: %s; reconnecting in %.0f s", reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

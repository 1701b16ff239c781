"""Database tables as SQLAlchemy 2 typed mapped classes (the API's pydantic schemas are separate).

The jobs table follows procrastinate's shape: a status column guarded by a CHECK constraint,
priority/attempt/scheduled_at for the queue, heartbeat_at/claimed_by for liveness and a
``job_events`` log with one row per transition and per reported progress event. The claim query
``WHERE status='queued' AND scheduled_at <= now ORDER BY priority DESC, scheduled_at, id`` is
served by a partial index (PostgreSQL and SQLite both support ``WHERE`` on indexes).

Timestamps are timezone-aware UTC in Python on both dialects (:class:`UTCDateTime`), JSON is
JSONB on PostgreSQL. This module is Alembic's ``target_metadata``: a test fails when it drifts
from the migrations.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .jobs.states import JobStatus

JOB_KINDS = ("search", "retrain", "profile", "sweep")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite (which has no zone) stores naive UTC text."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Token(Base):
    """An API token, stored as sha256 only; ``prefix`` finds the row without scanning hashes.

    A token with ``job_id`` is a per-job worker token minted by the dispatcher for one attempt.
    """

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    project: Mapped[str] = mapped_column(String(100), default="default")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('" + "', '".join(JobStatus) + "')", name="status"),
        CheckConstraint("kind IN ('" + "', '".join(JOB_KINDS) + "')", name="kind"),
        CheckConstraint("attempt >= 1 AND max_attempts >= 1", name="attempts"),
        UniqueConstraint("project", "idempotency_key"),
        Index("ix_jobs_project_status_created", "project", "status", "created_at"),
        Index("ix_jobs_project_created", "project", "created_at", "id"),
        Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    project: Mapped[str] = mapped_column(String(100), default="default")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    #: Why each failed attempt failed: ``[{attempt, error, traceback_tail, at}]``, oldest first
    #: (kept across retries; ``error`` is only the latest word).
    attempt_errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    scheduled_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    architecture_id: Mapped[int | None] = mapped_column(
        ForeignKey("architectures.id", ondelete="SET NULL", use_alter=True), index=True
    )
    latency_table_id: Mapped[int | None] = mapped_column(
        ForeignKey("latency_tables.id", ondelete="SET NULL", use_alter=True)
    )
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("tokens.id", ondelete="SET NULL", use_alter=True)
    )
    #: A sweep's trial: the sweep job (a trial is a ``search`` job that only its sweep starts;
    #: the dispatcher never claims it) and its index in the sweep's grid.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    trial: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# The claim order; partial so finished jobs (the bulk of the table over time) cost nothing.
Index(
    "ix_jobs_claim",
    Job.status,
    Job.priority.desc(),
    Job.scheduled_at,
    Job.id,
    postgresql_where=text(f"status = '{JobStatus.QUEUED}'"),
    sqlite_where=text(f"status = '{JobStatus.QUEUED}'"),
)


class JobTag(Base):
    """A free-text label on a job (``tags`` in the API); ``?tag=`` filters the jobs list."""

    __tablename__ = "job_tags"
    __table_args__ = (Index("ix_job_tags_tag_job_id", "tag", "job_id"),)

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)


class JobEvent(Base):
    """One row per state transition (``seq`` NULL) and per event a worker reported.

    ``(job_id, seq)`` is unique: a resumed attempt re-sending a step is a duplicate, not a row.
    """

    __tablename__ = "job_events"
    __table_args__ = (
        UniqueConstraint("job_id", "seq"),
        Index("ix_job_events_job_id_id", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Architecture(Base):
    __tablename__ = "architectures"
    __table_args__ = (
        Index("ix_architectures_project_created", "project", "created_at", "id"),
        Index("ix_architectures_project_space", "project", "space"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default")
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    space: Mapped[str | None] = mapped_column(String(100))
    doc: Mapped[dict[str, Any]]
    mult_adds: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[int | None] = mapped_column(BigInteger)
    accuracy_top1: Mapped[float | None] = mapped_column(Float)
    accuracy_top5: Mapped[float | None] = mapped_column(Float)
    #: α/β of the search that produced it, kept so it can be re-derived under another budget.
    arch_params: Mapped[dict[str, Any] | None]
    #: {latency_table_id: ms}, filled lazily by queries that filter on latency.
    predicted_latency: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: {device name: ms} measured by a worker.
    measured_latency: Mapped[dict[str, Any]] = mapped_column(default=dict)
    derived_from: Mapped[int | None] = mapped_column(
        ForeignKey("architectures.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LatencyTable(Base):
    __tablename__ = "latency_tables"
    __table_args__ = (Index("ix_latency_tables_project_created", "project", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default")
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    device_name: Mapped[str] = mapped_column(String(200))
    device_kind: Mapped[str] = mapped_column(String(16))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    batch: Mapped[int] = mapped_column(Integer, default=1)
    input_size: Mapped[int | None] = mapped_column(Integer)
    dtype: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(64))
    space: Mapped[str | None] = mapped_column(String(100))
    entry_count: Mapped[int] = mapped_column(Integer, default=0)
    doc: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

"""Queue a new job: the project it goes to, the rows its spec names, and Idempotency-Key
replays."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import sweeps
from ..auth import Principal
from ..errors import Conflict, Forbidden, Invalid
from ..models import Architecture, Job, JobTag, LatencyTable, utcnow
from .states import JobStatus
from .transitions import status_event

__all__ = ["create_job", "set_tags"]


def _request_fingerprint(
    kind: str, spec: dict[str, Any], priority: int, tags: Iterable[str] = ()
) -> str:
    raw = json.dumps(
        {"kind": kind, "spec": spec, "priority": priority, "tags": sorted(set(tags))},
        sort_keys=True,
    )
    return hashlib.sha256(raw.encode()).hexdigest()


def _check_references(session: Session, kind: str, spec: dict[str, Any], project: str) -> None:
    """Ids inside a spec must name rows of the job's project (422 naming the field)."""
    if kind == "retrain":
        arch = session.get(Architecture, spec["architecture_id"])
        if arch is None or arch.project != project:
            raise Invalid.field(
                "spec.architecture_id",
                f"architecture {spec['architecture_id']} not found in project {project!r}",
            )
    if kind == "search":
        _check_table(session, (spec.get("cost") or {}).get("latency_table_id"), project, "spec")
    if kind == "sweep":
        for _config, trial in sweeps.trial_specs(spec):
            table_id = (trial.get("cost") or {}).get("latency_table_id")
            _check_table(session, table_id, project, "spec.search")


def _check_table(session: Session, table_id: int | None, project: str, where: str) -> None:
    if table_id is not None:
        table = session.get(LatencyTable, table_id)
        if table is None or table.project != project:
            raise Invalid.field(
                f"{where}.cost.latency_table_id",
                f"latency table {table_id} not found in project {project!r}",
            )


def create_job(
    session: Session,
    principal: Principal,
    body: Any,
    *,
    default_max_attempts: int,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[Job, bool]:
    """Queue a job → (job, created). The same Idempotency-Key in a project returns the job it
    created the first time (created=False), provided the request is the same."""
    now = now or utcnow()
    project = body.project or principal.project
    if project != principal.project and not principal.is_admin:
        raise Forbidden("only admins can create jobs in another project")
    spec = body.spec.model_dump(mode="json")
    fingerprint = _request_fingerprint(body.kind, spec, body.priority, body.tags)
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise Invalid.field("Idempotency-Key", "must be 1 to 200 characters")
        existing = _by_idempotency_key(session, project, idempotency_key)
        if existing is not None:
            return _replay(session, existing, fingerprint, idempotency_key), False
    _check_references(session, body.kind, spec, project)
    job = Job(
        kind=body.kind,
        status=JobStatus.QUEUED,
        project=project,
        priority=body.priority,
        spec=spec,
        attempt=1,
        max_attempts=body.max_attempts or default_max_attempts,
        scheduled_at=now,
        idempotency_key=idempotency_key,
        architecture_id=spec.get("architecture_id") if body.kind == "retrain" else None,
        latency_table_id=(spec.get("cost") or {}).get("latency_table_id")
        if body.kind == "search"
        else None,
        created_by=principal.token_id,
        created_at=now,
        updated_at=now,
        progress=None,
        result=None,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with the same Idempotency-Key: the other request's job is the answer.
        session.rollback()
        existing = (
            _by_idempotency_key(session, project, idempotency_key) if idempotency_key else None
        )
        if existing is None:
            raise
        return _replay(session, existing, fingerprint, idempotency_key), False
    session.add_all(JobTag(job_id=job.id, tag=tag) for tag in body.tags)
    status_event(session, job, None, JobStatus.QUEUED, now, reason="created")
    if job.kind == "sweep":
        sweeps.create_trials(session, job, now, tags=body.tags)
    session.commit()
    return job, True


def _by_idempotency_key(session: Session, project: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.project == project, Job.idempotency_key == key))


def _replay(session: Session, job: Job, fingerprint: str, key: str | None) -> Job:
    """The job a repeated Idempotency-Key names, when the request is the same (its tags
    compared with the job's tags now)."""
    tags = session.scalars(select(JobTag.tag).where(JobTag.job_id == job.id))
    if _request_fingerprint(job.kind, job.spec, job.priority, tags) != fingerprint:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used for job {job.id} with a different request",
            current_state=job.status,
            job_id=job.id,
        )
    return job


def set_tags(session: Session, job: Job, tags: Sequence[str]) -> None:
    """Replace ``job``'s tags with ``tags`` (already validated, without repeats) and commit."""
    current = set(session.scalars(select(JobTag.tag).where(JobTag.job_id == job.id)))
    wanted = set(tags)
    if current - wanted:
        session.execute(
            delete(JobTag).where(JobTag.job_id == job.id, JobTag.tag.in_(current - wanted))
        )
    session.add_all(JobTag(job_id=job.id, tag=tag) for tag in sorted(wanted - current))
    session.commit()

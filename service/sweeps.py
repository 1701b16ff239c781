"""Sweeps: a family of searches run as one Ray Tune job (issue 14).

A ``sweep`` job's spec is a base search spec and a grid over its fields (dotted for nested
ones: ``cost.target``). When the sweep is accepted, each grid point becomes a *trial*: a
``search`` job with ``parent_id`` = the sweep and ``trial`` = its index, validated like any
search. The dispatcher never claims a trial (:mod:`service.jobs.queue`); the sweep's worker
(``workers.sweep``) runs a Tune ``Tuner`` whose trials start their job through
``POST /v1/jobs/{sweep}/trials/{i}/start`` with the sweep's token, get the trial's own job
token, and then report, heartbeat and complete like a lone search — so each trial has the
search job page, curves, α/β and stored architecture of any search.

The sweep's life drives its trials': a trial has one attempt per sweep attempt (its
``max_attempts`` equals its ``attempt``, so whatever ends it ends it for this sweep attempt),
a sweep attempt that ends ends its running trials, a retried sweep re-runs every trial that did
not succeed, and a finished sweep cancels trials that never started. Each trial's transitions
are mirrored into the sweep's event stream as ``trial`` events.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .errors import Conflict, Invalid, NotFound, validation_problem
from .jobs.states import JobStatus
from .models import Architecture, Job, JobEvent, JobTag
from .spec_models import SearchSpec


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def apply_config(base: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a search spec as JSON) with each dotted path of ``config`` set."""
    out = json.loads(json.dumps(base))
    for path, value in config.items():
        *head, last = path.split(".")
        node = out
        for part in head:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return out


def trial_specs(spec: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``[(config, validated search spec as JSON)]`` of a sweep spec's trials; a trial spec
    that is not a valid search is a 422 naming ``spec.grid.<key>`` and the trial's values."""
    out = []
    for config in grid_points(spec["grid"]):
        raw = apply_config(spec["search"], config)
        try:
            model = SearchSpec.model_validate(raw)
        except ValidationError as e:
            first = (validation_problem([dict(x) for x in e.errors()]).extra.get("errors") or [{}])[
                0
            ]
            keys = ", ".join(config)
            raise Invalid(
                errors=[
                    {
                        "loc": f"spec.grid.{next(iter(config))}",
                        "msg": (
                            f"trial {json.dumps(config)}: {first.get('loc', 'spec')}: "
                            f"{first.get('msg', 'invalid')} (grid keys: {keys})"
                        ),
                    }
                ]
            ) from None
        out.append((config, model.model_dump(mode="json")))
    return out


# -- the rows ------------------------------------------------------------------------------------


def create_trials(
    session: Session, sweep: Job, now: datetime, tags: Sequence[str] = ()
) -> list[Job]:
    """One queued ``search`` job per grid point of ``sweep`` (already flushed), with the
    sweep's ``tags`` (a tag finds the family and its members)."""
    from .jobs.transitions import status_event

    trials = []
    for index, (_config, spec) in enumerate(trial_specs(sweep.spec)):
        trial = Job(
            kind="search",
            status=JobStatus.QUEUED,
            project=sweep.project,
            priority=sweep.priority,
            spec=spec,
            attempt=1,
            max_attempts=1,
            scheduled_at=now,
            parent_id=sweep.id,
            trial=index,
            latency_table_id=(spec.get("cost") or {}).get("latency_table_id"),
            created_by=sweep.created_by,
            created_at=now,
            updated_at=now,
        )
        session.add(trial)
        trials.append(trial)
    session.flush()
    session.add_all(JobTag(job_id=t.id, tag=tag) for t in trials for tag in tags)
    for trial in trials:
        status_event(
            session, trial, None, JobStatus.QUEUED, now, reason=f"created by sweep {sweep.id}"
        )
    return trials


def trials_of(session: Session, sweep_id: int) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.parent_id == sweep_id).order_by(Job.trial, Job.id))
    )


def trial_config(
    sweep: Job, index: int, points: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Trial ``index``'s grid values (``points``: the sweep's :func:`grid_points`, when the
    caller has them)."""
    points = grid_points(sweep.spec["grid"]) if points is None else points
    return points[index] if 0 <= index < len(points) else {}


def launch_trials(session: Session, sweep: Job) -> list[dict[str, Any]]:
    """What the sweep's worker runs this attempt: ``[{job_id, trial, config, status}]`` of
    every trial; it starts those that did not succeed."""
    points = grid_points(sweep.spec["grid"])
    return [
        {
            "job_id": t.id,
            "trial": t.trial,
            "config": trial_config(sweep, t.trial or 0, points),
            "status": t.status,
        }
        for t in trials_of(session, sweep.id)
    ]


def mirror(session: Session, trial: Job, to: str, now: datetime, data: Mapping[str, Any]) -> None:
    """A trial's status change as a ``trial`` event in its sweep's stream."""
    if trial.parent_id is None:
        return
    sweep = session.get(Job, trial.parent_id)
    event = {
        "trial": trial.trial,
        "job_id": trial.id,
        "config": trial_config(sweep, trial.trial or 0) if sweep is not None else {},
        "attempt": trial.attempt,
        "status": to,
        **{k: data[k] for k in ("reason", "error") if data.get(k) is not None},
    }
    session.add(
        JobEvent(job_id=trial.parent_id, seq=None, type="trial", data=event, created_at=now)
    )


def end_running_trials(session: Session, sweep: Job, now: datetime) -> None:
    """The sweep's attempt ended: its running trials end with it (cancelled when the sweep
    was cancelled, else failed), so no trial token outlives the sweep's."""
    cancelled = sweep.status == JobStatus.CANCELLED or sweep.cancel_requested
    to = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
    why = f"sweep {sweep.id} attempt ended ({sweep.status})"
    for trial in session.scalars(
        select(Job).where(Job.parent_id == sweep.id, Job.status == JobStatus.RUNNING)
    ):
        _end_running(session, trial, to, why, now)


def _end_running(session: Session, trial: Job, to: JobStatus, why: str, now: datetime) -> None:
    """Move a running trial to ``to`` with ``why`` (its token revoked, its move mirrored); a
    trial that moved meanwhile is left as it is."""
    from .jobs.transitions import end_attempt, status_event, truncate

    why = truncate(why) or why
    try:
        end_attempt(session, trial, "end", now, status=to, finished_at=now, error=why)
    except Conflict:
        return
    status_event(session, trial, JobStatus.RUNNING, to, now, reason=why)


def cancel_queued_trials(session: Session, sweep: Job, now: datetime) -> None:
    """A sweep that is over starts nothing more: its never-started trials are cancelled."""
    from .jobs.transitions import status_event

    why = f"sweep {sweep.id} ended ({sweep.status}) before this trial started"
    queued = list(
        session.scalars(
            select(Job).where(Job.parent_id == sweep.id, Job.status == JobStatus.QUEUED)
        )
    )
    for trial in queued:
        trial.status = JobStatus.CANCELLED
        trial.finished_at = now
        trial.error = why
        trial.updated_at = now
        status_event(session, trial, JobStatus.QUEUED, JobStatus.CANCELLED, now, reason=why)


def request_cancel_trials(session: Session, sweep: Job, now: datetime) -> None:
    """A cancel of a running sweep reaches its running trials' workers (their next report)."""
    session.execute(
        update(Job)
        .where(Job.parent_id == sweep.id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now),
        execution_options={"synchronize_session": False},
    )


def requeue_unfinished(session: Session, sweep: Job, now: datetime) -> None:
    """A sweep attempt starts: every trial that did not succeed runs again (its next
    attempt), every one that did keeps its result."""
    from .jobs.transitions import status_event

    for trial in trials_of(session, sweep.id):
        if trial.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            frm = trial.status
            trial.status = JobStatus.QUEUED
            trial.attempt += 1
            trial.max_attempts = trial.attempt
            trial.finished_at = trial.started_at = trial.heartbeat_at = None
            trial.cancel_requested = False
            trial.error = None
            trial.updated_at = now
            status_event(
                session, trial, frm, JobStatus.QUEUED, now, reason=f"sweep attempt {sweep.attempt}"
            )


# -- the result ----------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[int, float, float]]) -> list[int]:
    """Ids of the ``(id, cost, accuracy)`` points no other point beats (cost no higher and
    accuracy no lower, one of them strictly), cheapest first."""
    front = []
    for i, cost, acc in points:
        dominated = any(
            c <= cost and a >= acc and (c < cost or a > acc) for j, c, a in points if j != i
        )
        if not dominated:
            front.append((cost, -acc, i))
    return [i for _, _, i in sorted(front)]


def summary(session: Session, sweep: Job) -> dict[str, Any]:
    """The sweep's result: each trial's config, status, metrics and architecture, the
    family's cost-vs-accuracy Pareto front (mult-adds vs the search's val_acc) and the
    counts by status."""
    rows: list[dict[str, Any]] = []
    points = []
    trials = trials_of(session, sweep.id)
    grid = grid_points(sweep.spec["grid"])
    for t in trials:
        result = t.result or {}
        metrics = result.get("metrics") or {}
        arch_id = result.get("architecture_id")
        arch = session.get(Architecture, arch_id) if arch_id else None
        row = {
            "trial": t.trial,
            "job_id": t.id,
            "config": trial_config(sweep, t.trial or 0, grid),
            "status": t.status,
            "attempt": t.attempt,
            "error": t.error,
            "val_acc": metrics.get("val_acc"),
            "derived_val_acc": metrics.get("derived_val_acc"),
            "architecture_id": arch_id,
            "mult_adds": arch.mult_adds if arch else None,
            "params": arch.params if arch else None,
        }
        rows.append(row)
        val_acc = metrics.get("val_acc")
        if arch is not None and arch.mult_adds is not None and val_acc is not None:
            points.append((t.id, float(arch.mult_adds), float(val_acc)))
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return {"trials": rows, "pareto_front": pareto_front(points), "counts": counts}


# -- what the sweep's worker asks ----------------------------------------------------------------


def _trial(session: Session, sweep_id: int, index: int) -> tuple[Job, Job]:
    sweep = session.get(Job, sweep_id, populate_existing=True)
    if sweep is None or sweep.kind != "sweep":
        raise NotFound(f"sweep {sweep_id} not found")
    trial = session.scalar(select(Job).where(Job.parent_id == sweep_id, Job.trial == index))
    if trial is None:
        raise NotFound(f"sweep {sweep_id} has no trial {index}")
    return sweep, trial


def start_trial(
    session: Session, sweep_id: int, index: int, worker: str, now: datetime
) -> tuple[Job, str]:
    """Claim trial ``index`` of a running sweep for its worker → (trial, its job token). A
    sweep that is cancelling or over starts no trial (409 with the sweep's state)."""
    from .jobs.transitions import guarded, status_event
    from .tokens import create_token

    sweep, trial = _trial(session, sweep_id, index)
    if sweep.status != JobStatus.RUNNING or sweep.cancel_requested:
        state = "cancelling" if sweep.cancel_requested else sweep.status
        raise Conflict(f"sweep {sweep_id} is {state}; it starts no trial", current_state=state)
    if trial.status != JobStatus.QUEUED:
        raise Conflict(
            f"trial {index} (job {trial.id}) is {trial.status}; only a queued trial starts",
            current_state=trial.status,
        )
    guarded(
        session,
        trial,
        JobStatus.QUEUED,
        "start",
        now,
        status=JobStatus.RUNNING,
        claimed_by=worker,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        cancel_requested=False,
    )
    token = create_token(
        session, f"job-{trial.id}-attempt-{trial.attempt}", trial.project, job_id=trial.id
    )
    status_event(session, trial, JobStatus.QUEUED, JobStatus.RUNNING, now, worker=worker)
    return trial, token


def end_trial(
    session: Session, sweep_id: int, index: int, outcome: str, error: str, now: datetime
) -> Job:
    """The sweep's worker ends a trial whose own worker could not say so (stopped early by the
    scheduler, its process died): ``outcome`` cancelled or failed. A trial that is not running
    is left as it is (its own ``complete`` came first)."""
    _, trial = _trial(session, sweep_id, index)
    if trial.status == JobStatus.RUNNING:
        _end_running(session, trial, JobStatus(outcome), error, now)
    return trial

"""A sweep's trials: what its worker asks (start a trial, end one its worker could not) with
the sweep's job token, and the trials table people read (service.sweeps)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from .. import sweeps
from ..auth import CurrentUser, JobWorker, SessionDep, SettingsDep
from ..errors import NotFound
from ..models import utcnow
from ..schemas import JobPublic, SweepTrial
from ..spec_models import MAX_TRIALS
from . import AUTH_ERRORS, RowId, problems
from .jobs import one

router = APIRouter(prefix="/v1/jobs", tags=["sweeps"])

TrialIndex = Annotated[int, Path(ge=0, le=MAX_TRIALS, description="0-based trial index")]


class TrialLaunch(BaseModel):
    payload: Annotated[
        dict[str, Any],
        Field(
            description=(
                "the trial's launch payload (docs/DESIGN.md): a search job's, with the trial's "
                "own job token for its events, heartbeats and complete"
            )
        ),
    ]


class TrialEnd(BaseModel):
    outcome: Annotated[
        Literal["failed", "cancelled"],
        Field(description="how the trial ended: failed or cancelled"),
    ]
    error: Annotated[
        str, Field(min_length=1, max_length=20_000, description="why, for the trial's page")
    ]


class SweepTrials(BaseModel):
    data: Annotated[list[SweepTrial], Field(description="the sweep's trials, in grid order")]
    pareto_front: Annotated[
        list[int],
        Field(description="job ids of the trials no other beats on mult-adds and val_acc"),
    ]
    counts: Annotated[dict[str, int], Field(description="trials by status")]


@router.post(
    "/{job_id}/trials/{trial}/start",
    response_model=TrialLaunch,
    responses=problems(*AUTH_ERRORS, 404, 409),
)
def start_trial(
    job_id: RowId,
    trial: TrialIndex,
    worker: JobWorker,
    session: SessionDep,
    settings: SettingsDep,
) -> TrialLaunch:
    """The sweep's worker starts trial ``trial`` (sweep's token); 409 once the sweep is
    cancelling or over."""
    from ..dispatcher import build_payload

    row, token = sweeps.start_trial(session, job_id, trial, f"sweep-{job_id}", utcnow())
    payload = build_payload(session, row, token, settings).to_dict()
    session.commit()
    return TrialLaunch(payload=payload)


@router.post(
    "/{job_id}/trials/{trial}/end",
    response_model=JobPublic,
    responses=problems(*AUTH_ERRORS, 404),
)
def end_trial(
    job_id: RowId, trial: TrialIndex, body: TrialEnd, worker: JobWorker, session: SessionDep
) -> JobPublic:
    """The sweep's worker ends a running trial whose own worker could not (stopped early by
    the scheduler, process gone); a trial that already ended is returned as it is."""
    row = sweeps.end_trial(session, job_id, trial, body.outcome, body.error, utcnow())
    session.commit()
    return one(session, row)


@router.get("/{job_id}/trials", response_model=SweepTrials, responses=problems(*AUTH_ERRORS, 404))
def list_trials(job_id: RowId, principal: CurrentUser, session: SessionDep) -> SweepTrials:
    """A sweep's trials as they are now: config, status, metrics and architecture of each,
    and the family's Pareto front."""
    from ..models import Job

    sweep = session.get(Job, job_id)
    if sweep is None or not principal.can_see(sweep.project) or sweep.kind != "sweep":
        raise NotFound(f"sweep {job_id} not found")
    out = sweeps.summary(session, sweep)
    return SweepTrials(data=out["trials"], pareto_front=out["pareto_front"], counts=out["counts"])

"""Where a job runs and what it uses (``/resources``), and the checkpoints it wrote
(``/checkpoints``): what users of W&B, MLflow or the Ray dashboard look for on a job's page.

Both answer 200 with a ``message`` when the executor or the storage cannot say (no executor in
this process, Ray's state API without a dashboard, an object store out of reach): a page that
polls them keeps working, and nothing here is a 500.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .. import jobs
from ..auth import CurrentUser, SessionDep, SettingsDep
from . import AUTH_ERRORS, RowId, problems

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _f(text: str) -> Any:
    return Field(None, description=text)


class JobProcess(BaseModel):
    """One process of a running job."""

    role: Annotated[
        str,
        Field(
            description="'job actor' (the detached per-job Ray actor), 'train controller' "
            "(Ray Train's), 'rank N' (a data-parallel worker whose rank is known), 'train "
            "worker' (rank unknown) or 'inline thread' (the inline executor's own process)"
        ),
    ]
    rank: int | None = _f("data-parallel rank, for a worker whose rank is known")
    actor_id: str | None = _f("Ray actor id (Ray only)")
    actor_class: str | None = _f("Ray actor class: JobActor, TrainController, RayTrainWorker")
    node_id: str | None = _f("Ray node id")
    node_ip: str | None = _f("IP address of the node")
    hostname: str | None = _f("host name of the node")
    pid: int | None = _f("process id on its node")
    state: str | None = _f("Ray's actor state (ALIVE, PENDING_CREATION, ...)")
    device: str | None = _f("the rank's torch device (cpu, cuda:0), from the rank's own report")
    cpu_percent: float | None = _f(
        "CPU use over ~0.2 s, in percent of one core (200 = two cores busy)"
    )
    rss_bytes: int | None = _f("resident memory (RSS) in bytes")
    num_threads: int | None = _f("threads of the process")
    gpu_memory_bytes: int | None = _f(
        "GPU memory the process holds (nvidia-smi); null where the node has no NVIDIA GPU"
    )
    usage_source: str | None = _f(
        "how the usage was measured: psutil on the control plane's host, or psutil in a Ray "
        "task pinned to the process's node; null: not measured"
    )


class JobResources(BaseModel):
    """The processes of a running job, and where to look further."""

    job_id: Annotated[int, Field(description="the job")]
    status: Annotated[str, Field(description="the job's status when read")]
    executor: Annotated[
        str, Field(description="executor that answered: ray, inline, none (API-only process)")
    ]
    source: str | None = _f(
        "where the processes were read: gcs-actor-table (Ray's actor table, owners link the "
        "job actor, its Train controller and workers), state-api (ray.util.state, needs the "
        "Ray dashboard), 'job actor status and the ranks' markers', this process (inline)"
    )
    attempt: int | None = _f("the attempt the job actor runs, as it says")
    processes: list[JobProcess] = Field(
        default_factory=list, description="live processes of the job (empty once it ended)"
    )
    workers: list[dict[str, Any]] | None = _f(
        "where the ranks ran as the job's stored result says ({rank, world_size, node_id, "
        "hostname, pid, device} per rank): set once a search or retrain finished"
    )
    message: str | None = _f("what could not be read, and why; null when nothing is missing")
    ray_dashboard_url: str | None = _f(
        "the Ray dashboard of this deployment (DENSENAS_RAY_DASHBOARD_URL), null when unset"
    )


class CheckpointInfo(BaseModel):
    """One complete checkpoint (``state.pt`` and ``meta.json``) of a job."""

    name: Annotated[str, Field(description="directory name (checkpoint_<date>.<usec>)")]
    uri: Annotated[str, Field(description="its location: a path or a storage URI (s3://, ...)")]
    global_step: Annotated[int, Field(description="optimizer steps done when it was written")]
    epoch: int | None = _f("epoch the loop was in (meta.json)")
    step_in_epoch: int | None = _f("step within that epoch (meta.json)")
    attempt: int | None = _f("attempt that wrote it (meta.json)")
    size_bytes: Annotated[int, Field(description="bytes of its files")]
    created_at: datetime | None = _f("when its meta.json, the last file written, was written")


class JobCheckpoints(BaseModel):
    """A job's checkpoints under its storage path, oldest first (two are kept)."""

    job_id: Annotated[int, Field(description="the job")]
    storage_path: Annotated[
        str, Field(description="the job's storage path (every attempt's; a path or a URI)")
    ]
    checkpoints: list[CheckpointInfo] = Field(
        default_factory=list, description="complete checkpoints, oldest first"
    )
    message: str | None = _f("why the storage could not be read; null when it was")


@router.get(
    "/{job_id}/resources", response_model=JobResources, responses=problems(*AUTH_ERRORS, 404)
)
def job_resources(
    request: Request,
    job_id: RowId,
    principal: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> JobResources:
    """Where a running job runs — its job actor, Ray Train controller and ranks: node, pid,
    state — and what each uses (CPU, resident memory, GPU memory); a finished one's ranks as
    its result stored them."""
    job = jobs.visible_job(session, principal, job_id)
    status, result = str(job.status), job.result or {}
    session.close()  # no transaction held while Ray answers
    out = JobResources(
        job_id=job_id,
        status=status,
        executor="none",
        workers=result.get("workers") if isinstance(result, dict) else None,
        ray_dashboard_url=settings.ray_dashboard_url,
    )
    if status != "running":
        out.message = f"the job is {status}: no live processes"
        return out
    dispatcher = request.app.state.dispatcher
    executor = getattr(dispatcher, "executor", None)
    ask = getattr(executor, "job_resources", None)
    if ask is None:
        out.executor = "none" if executor is None else type(executor).__name__
        out.message = "this API process runs no executor that can list a job's processes"
        return out
    try:
        found = ask(job_id, storage_path=settings.job_storage_path(job_id))
    except Exception as exc:  # noqa: BLE001 - Ray out of reach: say so on the page
        log.warning("job %s: resources unavailable: %s", job_id, exc)
        out.executor = type(executor).__name__
        out.message = f"the executor did not answer: {type(exc).__name__}: {exc}"
        return out
    return JobResources.model_validate(
        {**out.model_dump(), **found, "processes": found.get("processes") or []}
    )


@router.get(
    "/{job_id}/checkpoints", response_model=JobCheckpoints, responses=problems(*AUTH_ERRORS, 404)
)
def job_checkpoints(
    job_id: RowId, principal: CurrentUser, session: SessionDep, settings: SettingsDep
) -> JobCheckpoints:
    """The job's complete checkpoints under its storage path (local, s3://, gs://, …), read
    through pyarrow.fs as a retried attempt reads them."""
    jobs.visible_job(session, principal, job_id)
    session.close()
    storage = settings.job_storage_path(job_id)
    out = JobCheckpoints(job_id=job_id, storage_path=storage)
    from workers.executors import job_checkpoints as read_checkpoints

    try:
        rows = read_checkpoints(storage, job_id)
    except Exception as exc:  # noqa: BLE001 - storage out of reach, credentials, ...
        log.warning("job %s: checkpoints unreadable: %s", job_id, exc)
        out.message = f"the storage could not be read: {type(exc).__name__}: {exc}"
        return out
    out.checkpoints = [
        CheckpointInfo(
            **{
                **r,
                "created_at": None
                if r.get("created_at") is None
                else datetime.fromtimestamp(r["created_at"], UTC),
            }
        )
        for r in rows
    ]
    return out

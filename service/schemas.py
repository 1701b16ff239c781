"""The API's pydantic schemas, separate from the SQLAlchemy tables in :mod:`service.models`.

The job specs and the request bodies' base (:class:`Strict`) are in :mod:`service.spec_models`,
the worker protocol's bodies in :mod:`service.worker_schemas`; both are re-exported here, so
``from service.schemas import X`` names every schema of the API.

Families follow full-stack-fastapi-template: ``XCreate`` in, ``XPublic`` out, ``XsPublic``
pages with ``data`` (and ``next_cursor`` where the list is paginated).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .jobs.states import JobKind, Outcome, StatusName
from .spec_models import (
    SPEC_MODELS,
    CostSpec,
    DatasetSpec,
    DeviceSpec,
    ProfileSpec,
    RetrainSpec,
    SearchSpec,
    Strict,
    derived,
    space_problem,
    worker_spec,
)
from .worker_schemas import (
    CompleteIn,
    EventIn,
    EventsAccepted,
    EventsIn,
    HeartbeatOut,
    ProfileResultIn,
    RetrainResultIn,
    SearchResultIn,
    WorkersIn,
)

# The names of the split-off modules (and the status literals), re-exported: every schema of the
# API is importable from here.
__all__ = [
    "SPEC_MODELS",
    "CompleteIn",
    "CostSpec",
    "DatasetSpec",
    "DeviceSpec",
    "EventIn",
    "EventsAccepted",
    "EventsIn",
    "HeartbeatOut",
    "JobKind",
    "Outcome",
    "ProfileResultIn",
    "ProfileSpec",
    "RetrainResultIn",
    "RetrainSpec",
    "SearchResultIn",
    "SearchSpec",
    "StatusName",
    "Strict",
    "WorkersIn",
    "derived",
    "space_problem",
    "worker_spec",
]

ProjectName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]


# -- jobs ------------------------------------------------------------------------------------


class _JobCreateBase(Strict):
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    max_attempts: int | None = Field(
        None, ge=1, le=100, description="automatic attempts (default: server setting)"
    )
    project: ProjectName | None = Field(None, description="admins only: create in this project")


class SearchJobCreate(_JobCreateBase):
    kind: Literal["search"]
    spec: SearchSpec = Field(default_factory=SearchSpec)


class RetrainJobCreate(_JobCreateBase):
    kind: Literal["retrain"]
    spec: RetrainSpec


class ProfileJobCreate(_JobCreateBase):
    kind: Literal["profile"]
    spec: ProfileSpec = Field(default_factory=ProfileSpec)


JobCreate = Annotated[
    SearchJobCreate | RetrainJobCreate | ProfileJobCreate, Field(discriminator="kind")
]


class Produced(BaseModel):
    architectures: list[int] = []
    latency_tables: list[int] = []


class AttemptError(BaseModel):
    """Why one attempt failed: the worker's message and the end of its traceback."""

    attempt: int
    error: str
    traceback_tail: str | None = None
    at: datetime | None = None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: JobKind
    status: StatusName
    project: str
    priority: int
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    attempt_errors: list[AttemptError] = Field(
        default_factory=list,
        description=(
            "one entry per failed attempt, oldest first (the error and the last lines of the "
            "worker's traceback)"
        ),
    )

    @field_validator("attempt_errors", mode="before")
    @classmethod
    def _none_is_no_errors(cls, value: Any) -> Any:
        return [] if value is None else value

    attempt: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime
    heartbeat_at: datetime | None
    cancel_requested: bool
    architecture_id: int | None
    latency_table_id: int | None
    produced: Produced = Field(default_factory=Produced)
    last_event_id: int | None = Field(
        None,
        description=(
            "id of the job's latest event when read: GET /v1/jobs/{id}/events with this as "
            "Last-Event-ID follows only what comes next"
        ),
    )


class JobsPublic(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = None


class JobStats(BaseModel):
    counts: dict[str, int]


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    job_id: int
    seq: int | None
    type: str
    data: dict[str, Any]
    created_at: datetime


class EventsPublic(BaseModel):
    data: list[EventPublic]
    next_after: int | None


class DeriveCost(Strict):
    """The budget a re-derivation must meet (at least one bound), and how to spend it."""

    max_mult_adds: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)
    latency_table_id: int | None = Field(None, ge=1)
    top_k: int = Field(
        64, ge=1, le=4096, description="how many most-probable paths to consider (k-best Viterbi)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeriveCost:
        if self.max_latency_ms is not None and self.latency_table_id is None:
            raise PydanticCustomError(
                "missing", "max_latency_ms needs a latency_table_id", {"field": "latency_table_id"}
            )
        return self


class DeriveRequest(Strict):
    cost: DeriveCost = Field(default_factory=DeriveCost)
    name: str | None = Field(None, max_length=200)


# -- architectures, latency tables, spaces ---------------------------------------------------


class RetrainRef(BaseModel):
    job_id: int
    status: StatusName
    top1: float | None = None
    top5: float | None = None


class ArchitecturePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project: str
    job_id: int | None
    name: str
    space: str | None
    mult_adds: int | None
    params: int | None
    accuracy_top1: float | None
    accuracy_top5: float | None
    predicted_latency: dict[str, float]
    measured_latency: dict[str, float]
    derived_from: int | None
    created_at: datetime


class ArchitectureDetail(ArchitecturePublic):
    doc: dict[str, Any]
    has_arch_params: bool = False
    retrains: list[RetrainRef] = []


class ArchitecturesPublic(BaseModel):
    data: list[ArchitecturePublic]
    next_cursor: str | None = None


class LatencyTablePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project: str
    job_id: int | None
    device_name: str
    device_kind: str
    torch_version: str | None
    batch: int
    input_size: int | None
    dtype: str | None
    method: str | None
    space: str | None
    entry_count: int
    created_at: datetime


class LatencyTableDetail(LatencyTablePublic):
    doc: dict[str, Any]


class LatencyTablesPublic(BaseModel):
    data: list[LatencyTablePublic]


class SpacePublic(BaseModel):
    name: str
    family: str
    input_size: int
    summary: dict[str, int]


class SpaceDetail(SpacePublic):
    description: dict[str, Any]
    blocks: list[dict[str, Any]]


class SpacesPublic(BaseModel):
    data: list[SpacePublic]


# -- identity and tokens ---------------------------------------------------------------------


class Me(BaseModel):
    id: int
    name: str
    project: str
    is_admin: bool
    job_id: int | None = None


class TokenCreate(Strict):
    name: str = Field(..., min_length=1, max_length=200)
    project: ProjectName = "default"
    admin: bool = False


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    project: str
    is_admin: bool
    job_id: int | None
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(..., description="shown once; only its hash is stored")


class TokensPublic(BaseModel):
    data: list[TokenPublic]


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    version: str


class ClusterGroup(BaseModel):
    name: str
    job_id: int
    attempt: int
    state: str
    cpus: float


class Cluster(BaseModel):
    """What the executor holds: Ray's totals and free resources, the service's placement groups
    and job actors (none of them should outlive its attempt), and what running jobs' specs
    hold (the dispatcher claims against ``total - held_by_running_jobs``)."""

    executor: Literal["ray", "inline", "none"]
    total: dict[str, float] = Field(default_factory=dict)
    available: dict[str, float] = Field(default_factory=dict)
    held_by_running_jobs: dict[str, float] = Field(default_factory=dict)
    placement_groups: list[ClusterGroup] = Field(default_factory=list)
    job_actors: list[int] = Field(default_factory=list)


class Problem(BaseModel):
    """RFC 7807 problem details (every error response)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    current_state: str | None = None

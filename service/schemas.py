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

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .jobs.states import JobKind, Outcome, StatusName
from .progress_schemas import (
    ArchEventData,
    EpochEventData,
    ErrorEventData,
    EventData,
    JobPace,
    JobProgress,
    JobResult,
    LogEventData,
    PaceLast,
    StepEventData,
    SweepTrial,
)
from .spec_models import (
    SPEC_MODELS,
    CostSpec,
    DatasetSpec,
    DeviceSpec,
    ProfileSpec,
    RetrainSpec,
    SearchSpec,
    Strict,
    SweepSpec,
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
    "ArchEventData",
    "EpochEventData",
    "ErrorEventData",
    "EventData",
    "JobPace",
    "JobProgress",
    "JobResult",
    "LogEventData",
    "PaceLast",
    "StepEventData",
    "SweepTrial",
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
    "SweepSpec",
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


#: Most tags one job may carry, and what a tag may look like (a label, never free prose).
MAX_TAGS = 16
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=+/-]*$"
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=TAG_PATTERN)]


def _drop_repeats(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


Tags = Annotated[
    list[Tag],
    Field(
        max_length=MAX_TAGS,
        description=(
            f"labels of the job (at most {MAX_TAGS}, each 1-64 characters of letters, digits "
            "and _ . : = + / -, starting with a letter or digit; repeats are dropped); "
            "GET /v1/jobs?tag= filters by them"
        ),
    ),
    AfterValidator(_drop_repeats),
]


class _JobCreateBase(Strict):
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    tags: Tags = []
    max_attempts: int | None = Field(
        None, ge=1, le=100, description="automatic attempts (default: server setting)"
    )
    project: ProjectName | None = Field(None, description="admins only: create in this project")


class SearchJobCreate(_JobCreateBase):
    kind: Annotated[Literal["search"], Field(description="job kind")]
    spec: SearchSpec = Field(
        default_factory=SearchSpec, description="search spec; omitted: all defaults"
    )


class RetrainJobCreate(_JobCreateBase):
    kind: Annotated[Literal["retrain"], Field(description="job kind")]
    spec: Annotated[RetrainSpec, Field(description="retrain spec (architecture_id is required)")]


class ProfileJobCreate(_JobCreateBase):
    kind: Annotated[Literal["profile"], Field(description="job kind")]
    spec: ProfileSpec = Field(
        default_factory=ProfileSpec, description="profile spec; omitted: all defaults"
    )


class SweepJobCreate(_JobCreateBase):
    kind: Annotated[Literal["sweep"], Field(description="job kind")]
    spec: Annotated[
        SweepSpec,
        Field(
            description=(
                "a base search spec and a grid over its fields: every combination runs as one "
                "trial (a search job) of one Ray Tune job"
            )
        ),
    ]


JobCreate = Annotated[
    SearchJobCreate | RetrainJobCreate | ProfileJobCreate | SweepJobCreate,
    Field(discriminator="kind"),
]


class Produced(BaseModel):
    architectures: Annotated[
        list[int], Field(description="ids of the architectures this job stored")
    ] = []
    latency_tables: Annotated[
        list[int], Field(description="ids of the latency tables this job stored")
    ] = []


class AttemptError(BaseModel):
    """Why one attempt failed: the worker's message and the end of its traceback."""

    attempt: Annotated[int, Field(description="the attempt that failed (1-based)")]
    error: Annotated[str, Field(description="the failure's message")]
    traceback_tail: Annotated[
        str | None,
        Field(
            description=(
                "last lines of the worker's traceback (at most 50 lines / 8 KB); null if none"
                " was reported"
            )
        ),
    ] = None
    at: Annotated[
        datetime | None, Field(description="when the attempt failed (UTC); null if unknown")
    ] = None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Annotated[int, Field(description="job id")]
    kind: Annotated[JobKind, Field(description="job kind: search, retrain, profile or sweep")]
    status: Annotated[StatusName, Field(description="current state of the job's state machine")]
    project: Annotated[str, Field(description="project the job belongs to")]
    priority: Annotated[
        int, Field(description="scheduling priority, -1000..1000; higher runs first")
    ]
    spec: Annotated[
        dict[str, Any], Field(description="the validated job spec as stored (defaults filled in)")
    ]
    progress: Annotated[
        JobProgress | None,
        Field(
            description=(
                "the job's last reported step/epoch/arch events and pace; null before the "
                "first event"
            )
        ),
    ]
    result: Annotated[
        JobResult | None,
        Field(
            description=(
                "what the finished job produced (shape depends on kind); null until it succeeds"
            )
        ),
    ]
    error: Annotated[str | None, Field(description="last failure message; null if none")]
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

    attempt: Annotated[int, Field(description="current attempt number (1-based)")]
    max_attempts: Annotated[
        int, Field(description="attempts allowed before the job fails for good")
    ]
    created_at: Annotated[datetime, Field(description="submission time (UTC)")]
    updated_at: Annotated[datetime, Field(description="last change to the row (UTC)")]
    started_at: Annotated[
        datetime | None,
        Field(description="when the current attempt started running (UTC); null if never"),
    ]
    finished_at: Annotated[
        datetime | None,
        Field(description="when the job reached a terminal state (UTC); null while live"),
    ]
    scheduled_at: Annotated[
        datetime,
        Field(
            description=(
                "earliest time the dispatcher may claim the job (UTC; later than created_at "
                "after a retry backoff)"
            )
        ),
    ]
    heartbeat_at: Annotated[
        datetime | None, Field(description="last worker heartbeat (UTC); null if none yet")
    ]
    cancel_requested: Annotated[
        bool, Field(description="whether a cancel was requested and not yet honoured")
    ]
    architecture_id: Annotated[
        int | None, Field(description="retrain: the architecture being trained; otherwise null")
    ]
    latency_table_id: Annotated[
        int | None, Field(description="search: the latency table of a latency cost; otherwise null")
    ]
    parent_id: int | None = Field(
        None,
        description=(
            "a sweep's trial: the sweep job's id (the trial runs only inside its sweep); "
            "otherwise null"
        ),
    )
    trial: int | None = Field(
        None, description="a sweep's trial: its 0-based index in the sweep's grid; otherwise null"
    )
    tags: list[str] = Field(
        default_factory=list,
        description="the job's labels, sorted (set at creation or by PUT /v1/jobs/{id}/tags)",
    )
    produced: Produced = Field(
        default_factory=Produced, description="ids of the rows this job stored"
    )
    last_event_id: int | None = Field(
        None,
        description=(
            "id of the job's latest event when read: GET /v1/jobs/{id}/events with this as "
            "Last-Event-ID follows only what comes next"
        ),
    )


class JobTagsUpdate(Strict):
    tags: Tags


class JobsPublic(BaseModel):
    data: Annotated[list[JobPublic], Field(description="one page of jobs, newest first")]
    next_cursor: Annotated[
        str | None, Field(description="opaque cursor of the next page; null on the last page")
    ] = None


class JobStats(BaseModel):
    counts: Annotated[dict[str, int], Field(description="number of jobs per status")]


class EventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Annotated[int, Field(description="event id, increasing across all jobs (the SSE `id`)")]
    job_id: Annotated[int, Field(description="job that emitted the event")]
    seq: Annotated[
        int | None,
        Field(
            description=(
                "worker-assigned sequence number (deduplicates retried posts); null for "
                "status events (state transitions)"
            )
        ),
    ]
    type: Annotated[
        str, Field(description="event type: step, epoch, arch, log, error, status, ...")
    ]
    data: Annotated[
        EventData | dict[str, Any],
        Field(
            description=(
                "event payload; its keys depend on `type`: step → StepEventData, epoch → "
                "EpochEventData, arch → ArchEventData, log → LogEventData, error → "
                "ErrorEventData; status (a transition) → {from, to, attempt, ...}"
            )
        ),
    ]
    created_at: Annotated[datetime, Field(description="when the service stored the event (UTC)")]


class EventsPublic(BaseModel):
    data: Annotated[list[EventPublic], Field(description="events in id order")]
    next_after: Annotated[
        int | None, Field(description="pass as `after` for the next page; null when no more events")
    ]


class DeriveCost(Strict):
    """The budget a re-derivation must meet (at least one bound), and how to spend it."""

    max_mult_adds: int | None = Field(
        None, ge=1, description="upper bound on the derived network's multiply-adds; null: no bound"
    )
    max_latency_ms: float | None = Field(
        None,
        gt=0,
        description=(
            "upper bound on predicted latency in milliseconds (needs latency_table_id); null:"
            " no bound"
        ),
    )
    latency_table_id: int | None = Field(
        None, ge=1, description="latency table used to predict latency"
    )
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
    cost: DeriveCost = Field(
        default_factory=DeriveCost, description="cost constraints of the derivation"
    )
    name: str | None = Field(
        None,
        max_length=200,
        description="name of the new architecture (at most 200 characters); null: a generated name",
    )


#: how many budgets one derive-family request may hold
FAMILY_MIN, FAMILY_MAX = 2, 16


class DeriveFamilyRequest(Strict):
    """A family of architectures from one search: one per budget, derived in one transaction.
    ``cost`` (one budget: ``POST /v1/jobs/{id}/derive``) is refused here, as ``budgets`` is
    there: a 422 naming the field."""

    budgets: list[DeriveCost] = Field(
        min_length=FAMILY_MIN,
        max_length=FAMILY_MAX,
        description=(
            f"{FAMILY_MIN}-{FAMILY_MAX} budgets, each like derive's cost; the response lists one"
            " architecture per budget in this order (equal budgets: the same architecture)"
        ),
    )
    name: str | None = Field(
        None,
        max_length=180,
        description=(
            "prefix of the new architectures' names, followed by each budget (at most 180"
            " characters); null: search-<job id>"
        ),
    )


# -- architectures, latency tables, spaces ---------------------------------------------------


class RetrainRef(BaseModel):
    job_id: Annotated[int, Field(description="the retrain job")]
    status: Annotated[StatusName, Field(description="its current status")]
    top1: Annotated[
        float | None,
        Field(description="its top-1 validation accuracy (0..1) once reported; null otherwise"),
    ] = None
    top5: Annotated[
        float | None,
        Field(description="its top-5 validation accuracy (0..1) once reported; null otherwise"),
    ] = None


class ArchitecturePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Annotated[int, Field(description="architecture id")]
    project: Annotated[str, Field(description="project it belongs to")]
    job_id: Annotated[
        int | None, Field(description="job that produced it; null if imported or derived by hand")
    ]
    name: Annotated[str, Field(description="display name")]
    space: Annotated[
        str | None,
        Field(description="name of the search space it came from; null for a custom space"),
    ]
    mult_adds: Annotated[
        int | None,
        Field(
            description=(
                "multiply-adds of one forward pass at the space's input size; null if unknown"
            )
        ),
    ]
    params: Annotated[int | None, Field(description="number of parameters; null if unknown")]
    accuracy_top1: Annotated[
        float | None,
        Field(description="best top-1 validation accuracy (0..1) reported for it; null if none"),
    ]
    accuracy_top5: Annotated[
        float | None,
        Field(description="best top-5 validation accuracy (0..1) reported for it; null if none"),
    ]
    predicted_latency: Annotated[
        dict[str, float],
        Field(description="predicted latency in milliseconds, keyed by latency table id"),
    ]
    measured_latency: Annotated[
        dict[str, float], Field(description="measured latency in milliseconds, keyed by device")
    ]
    derived_from: Annotated[
        int | None, Field(description="architecture it was derived from; null otherwise")
    ]
    created_at: Annotated[datetime, Field(description="creation time (UTC)")]


class ArchitectureDetail(ArchitecturePublic):
    doc: Annotated[
        dict[str, Any],
        Field(
            description="the architecture document (densenas_core.document): blocks, ops, channels"
        ),
    ]
    has_arch_params: Annotated[
        bool,
        Field(
            description=(
                "whether the search's \u03b1/\u03b2 arch parameters are stored (needed to derive)"
            )
        ),
    ] = False
    retrains: Annotated[
        list[RetrainRef], Field(description="retrain jobs of this architecture")
    ] = []


class DerivedFamily(BaseModel):
    data: Annotated[
        list[ArchitectureDetail],
        Field(description="one derived architecture per budget, in the request's order"),
    ]


class ArchitecturesPublic(BaseModel):
    data: Annotated[
        list[ArchitecturePublic], Field(description="one page of architectures, newest first")
    ]
    next_cursor: Annotated[
        str | None, Field(description="opaque cursor of the next page; null on the last page")
    ] = None


class LatencyTablePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Annotated[int, Field(description="latency table id")]
    project: Annotated[str, Field(description="project it belongs to")]
    job_id: Annotated[
        int | None, Field(description="profile job that measured it; null if uploaded")
    ]
    device_name: Annotated[str, Field(description="name of the measured device")]
    device_kind: Annotated[str, Field(description="device class: cpu or cuda")]
    torch_version: Annotated[
        str | None, Field(description="torch version used to measure; null if unknown")
    ]
    batch: Annotated[int, Field(description="batch size of the measurements")]
    input_size: Annotated[
        int | None, Field(description="input resolution in pixels; null if unknown")
    ]
    dtype: Annotated[
        str | None, Field(description="tensor dtype of the measurements; null if unknown")
    ]
    method: Annotated[str | None, Field(description="timing method; null if unknown")]
    space: Annotated[
        str | None, Field(description="search space the table covers; null if unknown")
    ]
    entry_count: Annotated[int, Field(description="number of measured ops")]
    created_at: Annotated[datetime, Field(description="creation time (UTC)")]


class LatencyTableDetail(LatencyTablePublic):
    doc: Annotated[
        dict[str, Any],
        Field(
            description="the full table: per-op latencies in milliseconds and measuring metadata"
        ),
    ]


class LatencyTablesPublic(BaseModel):
    data: Annotated[list[LatencyTablePublic], Field(description="latency tables, newest first")]


class SpacePublic(BaseModel):
    name: Annotated[str, Field(description="preset name (use as `space` in a spec)")]
    family: Annotated[str, Field(description="space family")]
    input_size: Annotated[int, Field(description="default input resolution in pixels")]
    summary: Annotated[
        dict[str, int],
        Field(description="counts that size the space (blocks, paths, candidate ops, ...)"),
    ]


class SpaceDetail(SpacePublic):
    description: Annotated[
        dict[str, Any],
        Field(description="the space description (the object a custom `space` takes)"),
    ]
    blocks: Annotated[list[dict[str, Any]], Field(description="the space's blocks, in order")]


class SpacesPublic(BaseModel):
    data: Annotated[list[SpacePublic], Field(description="the preset search spaces")]


# -- identity and tokens ---------------------------------------------------------------------


class Me(BaseModel):
    id: Annotated[int, Field(description="token id")]
    name: Annotated[str, Field(description="token name")]
    project: Annotated[str, Field(description="project the token acts in")]
    is_admin: Annotated[bool, Field(description="whether the token is an admin token")]
    job_id: Annotated[
        int | None, Field(description="for a worker token: the job it is scoped to; otherwise null")
    ] = None


class TokenCreate(Strict):
    name: str = Field(
        ..., min_length=1, max_length=200, description="token name, 1..200 characters"
    )
    project: Annotated[ProjectName, Field(description="project the token acts in")] = "default"
    admin: Annotated[bool, Field(description="whether the token is an admin token")] = False


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: Annotated[int, Field(description="token id")]
    name: Annotated[str, Field(description="token name")]
    project: Annotated[str, Field(description="project the token acts in")]
    is_admin: Annotated[bool, Field(description="whether it is an admin token")]
    job_id: Annotated[
        int | None, Field(description="for a worker token: the job it is scoped to; otherwise null")
    ]
    created_at: Annotated[datetime, Field(description="creation time (UTC)")]
    revoked_at: Annotated[
        datetime | None, Field(description="revocation time (UTC); null while valid")
    ]


class TokenCreated(TokenPublic):
    token: str = Field(..., description="shown once; only its hash is stored")


class TokensPublic(BaseModel):
    data: Annotated[list[TokenPublic], Field(description="the tokens")]


class Health(BaseModel):
    status: Annotated[Literal["ok"], Field(description="always ok when the service answers")]
    database: Annotated[Literal["ok"], Field(description="ok when the database answered a query")]
    version: Annotated[str, Field(description="service version")]


class ClusterGroup(BaseModel):
    name: Annotated[str, Field(description="placement group name")]
    job_id: Annotated[int, Field(description="job that owns it")]
    attempt: Annotated[int, Field(description="attempt that owns it")]
    state: Annotated[str, Field(description="Ray's placement-group state")]
    cpus: Annotated[float, Field(description="CPUs it reserves")]


class Cluster(BaseModel):
    """What the executor holds: Ray's totals and free resources, the service's placement groups
    and job actors (none of them should outlive its attempt), and what running jobs' specs
    hold (the dispatcher claims against ``total - held_by_running_jobs``)."""

    executor: Annotated[
        Literal["ray", "inline", "none"], Field(description="executor in use: ray, inline or none")
    ]
    total: dict[str, float] = Field(
        default_factory=dict, description="cluster resources by name (CPU, GPU, memory, ...)"
    )
    available: dict[str, float] = Field(default_factory=dict, description="free resources by name")
    held_by_running_jobs: dict[str, float] = Field(
        default_factory=dict, description="resources the specs of running jobs hold, by name"
    )
    placement_groups: list[ClusterGroup] = Field(
        default_factory=list, description="the service's placement groups"
    )
    job_actors: list[int] = Field(
        default_factory=list, description="ids of jobs with a live job actor"
    )


class Problem(BaseModel):
    """RFC 7807 problem details (every error response)."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(description="URI reference identifying the problem type")]
    title: Annotated[str, Field(description="short summary of the problem type")]
    status: Annotated[int, Field(description="HTTP status code")]
    detail: Annotated[str, Field(description="explanation of this occurrence")]
    errors: Annotated[
        list[dict[str, Any]] | None,
        Field(description="validation errors (422): one object per problem, with its location"),
    ] = None
    current_state: Annotated[
        str | None, Field(description="the job's status when a transition was refused (409)")
    ] = None

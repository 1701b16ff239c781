"""The API's pydantic schemas, separate from the SQLAlchemy tables in :mod:`service.models`.

Job specs are the one vocabulary shared by REST, workers and ``densenas_core`` (docs/DESIGN.md,
"Job specs"); they forbid unknown keys so a typo (``epoch`` for ``epochs``) is a 422 naming the
field instead of a silently ignored setting that costs an hour of cluster time. Types are strict
(``true`` is not an integer, ``"3"`` is not a number) and no string may hold a NUL byte. A search
space is only typed here (a preset name or an object), never looked up or built on the event
loop — the core imports torch, and an unchecked description can take unbounded time to build:
:mod:`service.admission` does both in a worker thread, counting a description's blocks, paths
and channels against the configured limits first (the ``densenas_core.spaces.SpaceError``
message names the offending sub-field, which becomes part of the error location:
``spec.space.stages[0].widths``).

Families follow full-stack-fastapi-template: ``XCreate`` in, ``XPublic`` out, ``XsPublic``
pages with ``data`` (and ``next_cursor`` where the list is paginated).
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .jobs.states import TERMINAL, JobStatus

# Literals of the statuses' strings, not the enum: the OpenAPI schema stays an inline enum of
# strings (an enum-typed field would become a reference to a named schema). Spelled out for the
# type checker; the check below keeps them equal to JobStatus, in its order.
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["search", "retrain", "profile"]
Outcome = Literal["succeeded", "failed", "cancelled"]
if (get_args(StatusName) != tuple(s.value for s in JobStatus)
        or get_args(Outcome) != tuple(s.value for s in JobStatus if s in TERMINAL)):
    raise RuntimeError("service.schemas: StatusName/Outcome differ from jobs.states.JobStatus")
ProjectName = Annotated[str, Field(min_length=1, max_length=100,
                                   pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _nul_in(value: Any, depth: int = 0) -> bool:
    """Whether a string inside ``value`` (a str, or dicts/lists of them) holds a NUL byte."""
    if isinstance(value, str):
        return "\x00" in value
    if depth > 64:
        return False
    if isinstance(value, dict):
        return any(_nul_in(k, depth + 1) or _nul_in(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_nul_in(v, depth + 1) for v in value)
    return False


class Strict(BaseModel):
    """Request bodies: unknown keys refused, no type coercion (``true`` is not ``1``), no NUL
    bytes in any string (PostgreSQL's JSONB cannot store them; paths and names never hold
    them)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _no_nul_bytes(cls, value: Any) -> Any:
        if not isinstance(value, BaseModel) and _nul_in(value):
            raise PydanticCustomError("string_nul", "NUL bytes are not allowed in strings")
        return value


def space_problem(message: str) -> tuple[str, str]:
    """(sub-field, message) of a ``SpaceError`` message such as ``"stages[0].widths: ..."``."""
    head, sep, _rest = message.partition(": ")
    return (head if sep and head != "space" and _FIELD_PATH.match(head) else ""), message


#: Only typed here: :func:`service.admission.admit` checks the name or counts and builds the
#: description, in a worker thread (the core imports torch; a description can be huge).
SpaceRef = Annotated[str | dict[str, Any], Field(
    description="A preset name (GET /v1/spaces) or a custom space description.")]


# -- job specs -------------------------------------------------------------------------------

class DatasetSpec(Strict):
    name: Literal["fashion-mnist", "cifar10", "imagefolder", "synthetic"] = "fashion-mnist"
    root: str | None = Field(None, max_length=4096)
    limit_train: int | None = Field(None, ge=1, le=10_000_000)
    limit_val: int | None = Field(None, ge=1, le=10_000_000)
    num_classes: int | None = Field(None, ge=2, le=100_000,
                                    description="seeded random subset of the classes")
    input_size: int | None = Field(None, ge=8, le=2048)

    @model_validator(mode="after")
    def _root_for_imagefolder(self) -> DatasetSpec:
        if self.name == "imagefolder" and not self.root:
            raise PydanticCustomError("missing", "imagefolder needs a root directory",
                                      {"field": "root"})
        return self


class CostSpec(Strict):
    metric: Literal["flops", "latency"] = "flops"
    mode: Literal["log", "target", "none"] = "log"
    lam: float = Field(0.15, ge=0, le=100)
    tau: float | None = Field(None, gt=1, description="log mode: the cost scale (> 1)")
    target: float | None = Field(None, gt=0, description="target mode: the budget")
    latency_table_id: int | None = Field(None, ge=1)
    estimator: Literal["chained", "local"] = Field(
        "chained", description="'chained': DenseNAS's expected cost along the routing paths; "
        "'local': the supplementary A.5 baseline (every block counted as if on the path).")

    @model_validator(mode="after")
    def _latency_needs_table(self) -> CostSpec:
        if self.metric == "latency" and self.latency_table_id is None:
            raise PydanticCustomError(
                "missing", "metric 'latency' needs a latency_table_id (GET /v1/latency-tables)",
                {"field": "latency_table_id"})
        if self.mode == "target" and self.target is None:
            raise PydanticCustomError("missing", "mode 'target' needs a target",
                                      {"field": "target"})
        return self


class SearchSpec(Strict):
    space: SpaceRef = "mbv2-small"
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    epochs: int = Field(4, ge=1, le=1000)
    warmup_epochs: int = Field(1, ge=0, le=1000)
    batch_size: int = Field(64, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    schedule: Literal["scaled", "paper"] = Field(
        "scaled", description="'scaled' (default): weight lr 0.2·√(global batch/352) with a "
        "linear warm-up, arch lr 2.1/arch steps (clamped to [3e-4, 0.05]), entangled op "
        "weights; 'paper': the paper's 0.2, 3e-4, no warm-up, separate op weights.")
    w_lr: float | None = Field(None, gt=0, le=100, description="Weight lr; null: from "
                               "`schedule`.")
    w_lr_min: float = Field(1e-4, ge=0, le=100)
    lr_warmup_steps: int | None = Field(None, ge=0, le=10_000_000, description=(
        "Linear weight-lr warm-up steps; null: from `schedule` (5 % of the weight steps, "
        "5..500, for 'scaled'; 0 for 'paper')."))
    w_momentum: float = Field(0.9, ge=0, lt=1)
    w_wd: float = Field(4e-5, ge=0, le=1)
    a_lr: float | None = Field(None, gt=0, le=100, description="α/β Adam lr; null: from "
                               "`schedule`.")
    # not strict as a whole: a JSON array is the only way to write a pair (its items still are)
    a_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = \
        Field((0.5, 0.999), strict=False)
    a_wd: float = Field(1e-3, ge=0, le=1)
    weight_sharing: Literal["entangled", "separate"] | None = Field(None, description=(
        "'entangled': the MBConv candidates of a row are slices of one kernel; 'separate': "
        "one module per op (the paper); null: from `schedule`."))
    bn_calibration: int = Field(512, ge=0, le=100_000, description=(
        "Training images used to re-estimate BN statistics of the derived sub-network before "
        "each evaluation; 0: evaluate with batch statistics."))
    cost: CostSpec = Field(default_factory=CostSpec)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    num_workers: int = Field(1, ge=1, le=1024)
    use_gpu: bool = False
    checkpoint_every: int = Field(50, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _warmup_within_epochs(self) -> SearchSpec:
        if self.warmup_epochs > self.epochs:
            raise PydanticCustomError(
                "range", "warmup_epochs ({w}) cannot exceed epochs ({e})",
                {"w": self.warmup_epochs, "e": self.epochs, "field": "warmup_epochs"})
        return self


class RetrainSpec(Strict):
    architecture_id: int = Field(..., ge=1)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=4096)
    lr: float = Field(0.1, gt=0, le=100)
    lr_min: float = Field(1e-4, ge=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)
    wd: float = Field(4e-5, ge=0, le=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    num_nodes: int = Field(1, ge=1, le=1024)
    workers_per_node: int = Field(1, ge=1, le=1024)
    gpus_per_worker: float = Field(0, ge=0, le=64)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    precise_bn: int = Field(1024, ge=0, le=100_000, description=(
        "Training images over which BN statistics are re-estimated before each evaluation "
        "(precise BN); 0 keeps the running averages, which short retrains leave near init."))


class DeviceSpec(Strict):
    device: Literal["cpu", "cuda"] = "cpu"
    gpu_type: str | None = Field(None, max_length=100)


class ProfileSpec(Strict):
    space: SpaceRef = "mbv2-small"
    device: DeviceSpec = Field(default_factory=DeviceSpec)
    batch_size: int = Field(1, ge=1, le=4096)
    input_size: int | None = Field(None, ge=8, le=2048)
    warmup: int = Field(10, ge=0, le=10_000)
    repeats: int = Field(30, ge=1, le=10_000)


SPEC_MODELS: dict[str, type[Strict]] = {
    "search": SearchSpec, "retrain": RetrainSpec, "profile": ProfileSpec}


# -- jobs ------------------------------------------------------------------------------------

class _JobCreateBase(Strict):
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    max_attempts: int | None = Field(None, ge=1, le=100,
                                     description="automatic attempts (default: server setting)")
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


JobCreate = Annotated[SearchJobCreate | RetrainJobCreate | ProfileJobCreate,
                      Field(discriminator="kind")]


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
    attempt_errors: list[AttemptError] = Field(default_factory=list, description=(
        "one entry per failed attempt, oldest first (the error and the last lines of the "
        "worker's traceback)"))

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
    last_event_id: int | None = Field(None, description=(
        "id of the job's latest event when read: GET /v1/jobs/{id}/events with this as "
        "Last-Event-ID follows only what comes next"))


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
    top_k: int = Field(64, ge=1, le=4096,
                       description="how many most-probable paths to consider (k-best Viterbi)")

    @model_validator(mode="after")
    def _consistent(self) -> DeriveCost:
        if self.max_latency_ms is not None and self.latency_table_id is None:
            raise PydanticCustomError("missing", "max_latency_ms needs a latency_table_id",
                                      {"field": "latency_table_id"})
        return self


class DeriveRequest(Strict):
    cost: DeriveCost = Field(default_factory=DeriveCost)
    name: str | None = Field(None, max_length=200)


# -- worker protocol -------------------------------------------------------------------------

class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    seq: int | None = Field(None, ge=0, le=2**62)
    type: str = Field(..., min_length=1, max_length=32, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$")
    data: dict[str, Any] = Field(default_factory=dict)


class EventsIn(BaseModel):
    events: list[EventIn] = Field(..., max_length=5000)


class EventsAccepted(BaseModel):
    accepted: int
    duplicates: int
    cancel_requested: bool


class HeartbeatOut(BaseModel):
    cancel_requested: bool
    status: StatusName


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outcome: Outcome
    error: str | None = None
    traceback_tail: str | None = Field(None, description=(
        "the last lines of the failing worker's traceback (kept to 50 lines / 8 KB)"))
    result: dict[str, Any] | None = None


#: Where a job's data-parallel ranks ran: ``{rank, world_size, node_id, hostname, pid, device}``
#: per rank (``workers.runtime.Runtime.worker_info``); kept in the job's result.
WorkersIn = list[dict[str, Any]] | None


class SearchResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    architecture: dict[str, Any]
    arch_params: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    measured_latency: dict[str, Any] | None = None
    workers: WorkersIn = Field(None, max_length=4096)


class RetrainResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    metrics: dict[str, Any] = Field(default_factory=dict)
    workers: WorkersIn = Field(None, max_length=4096)


class ProfileResultIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    latency_table: dict[str, Any]


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

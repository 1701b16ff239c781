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

import dataclasses
import re
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workers.payload import ProfileDevice, ProfileResources, RetrainResources, SearchResources

from . import core
from .jobs.states import TERMINAL, JobStatus

# Literals of the statuses' strings, not the enum: the OpenAPI schema stays an inline enum of
# strings (an enum-typed field would become a reference to a named schema). Spelled out for the
# type checker; the check below keeps them equal to JobStatus, in its order.
StatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["search", "retrain", "profile"]
Outcome = Literal["succeeded", "failed", "cancelled"]
if get_args(StatusName) != tuple(s.value for s in JobStatus) or get_args(Outcome) != tuple(
    s.value for s in JobStatus if s in TERMINAL
):
    raise RuntimeError("service.schemas: StatusName/Outcome differ from jobs.states.JobStatus")
ProjectName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]

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


# -- job specs -------------------------------------------------------------------------------
#
# Derived, not declared: every field of a job spec, with its type, default, bounds and
# description, is read from a spec dataclass — the core's (densenas_core.specs: what a job
# computes) or the workers' (workers.payload: where and how it runs). What is declared here is
# only what the control plane itself reads: the rows a spec refers to (``architecture_id``,
# ``cost.latency_table_id``). The cross-field rules of a spec dataclass (``Spec.check``) run on
# the validated model, so they too are written once. A space (``space``) is only typed here:
# :func:`service.admission.admit` checks the name or counts and builds the description, in a
# worker thread (the core imports torch; a description can be huge).

#: each derived model → the spec dataclasses its fields come from
_SOURCES: dict[type[BaseModel], tuple[type, ...]] = {}


def _constraints(meta: tuple[Any, ...]) -> dict[str, Any]:
    """``Field`` keywords of a spec field's metadata (``Bounds``, ``MaxLen``, ``Doc``)."""
    kw: dict[str, Any] = {}
    for m in meta:
        if isinstance(m, core.Bounds):
            kw.update(
                {k: getattr(m, k) for k in ("ge", "gt", "le", "lt") if getattr(m, k) is not None}
            )
        elif isinstance(m, core.MaxLen):
            kw["max_length"] = m.n
        elif isinstance(m, core.Doc):
            kw["description"] = m.text
    return kw


def _annotation(tp: Any, nested: Mapping[type, type[BaseModel]]) -> Any:
    """The pydantic annotation of a spec type: nested specs become their models, bounds inside
    it (a tuple's items) ``Field`` constraints."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return Annotated[_annotation(args[0], nested), Field(**_constraints(args[1:]))]
    if isinstance(tp, type) and issubclass(tp, core.Spec):
        return nested[tp]
    if origin in (Union, types.UnionType):
        return Union[tuple(_annotation(a, nested) for a in args)]  # noqa: UP007 (built at run time)
    if origin is tuple:
        return tuple[tuple(_annotation(a, nested) for a in args)]  # type: ignore[misc]
    return tp


def _spec_rules(sources: tuple[type[core.Spec], ...]) -> Any:
    """The ``check`` of every source dataclass, run on the validated model; a ``SpecError``
    becomes a 422 at the field it names."""

    def rules(model: BaseModel) -> BaseModel:
        for source in sources:
            try:
                source.check(cast(Any, model))  # the same field names
            except core.SpecError as e:
                raise PydanticCustomError(
                    e.kind, "{message}", {"message": e.message, "field": e.where}
                ) from None
        return model

    return model_validator(mode="after")(rules)


def derived(*sources: type[core.Spec], nested: Mapping[type, type[BaseModel]] | None = None) -> Any:
    """A :class:`Strict` model with the fields of the spec dataclasses ``sources``, in order;
    ``nested`` maps a nested spec dataclass to its model. Typed ``Any``: the fields exist only
    at run time, so a model that subclasses it is opaque to mypy, not wrong."""
    fields: dict[str, Any] = {}
    for source in sources:
        for f, tp, meta in core.spec_fields(source):
            kw = _constraints(meta)
            if f.default_factory is not dataclasses.MISSING:
                factory: Any = f.default_factory
                kw["default_factory"] = (nested or {}).get(factory, factory)
            else:
                kw["default"] = f.default
            if get_origin(_without_none(tp)) is tuple:
                kw["strict"] = False  # a JSON array is the only way to write one (items stay)
            fields[f.name] = (_annotation(tp, nested or {}), Field(**kw))
    name = "_" + "_".join(source.__name__ for source in sources)
    model = create_model(
        name, __base__=Strict, __validators__={"_spec_rules": _spec_rules(sources)}, **fields
    )
    _SOURCES[model] = sources
    return model


def _without_none(tp: Any) -> Any:
    """``tp`` without ``| None``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def worker_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ``kind`` job spec less the fields only the control plane reads (the rows it
    names, which the launch payload carries resolved): the spec a worker gets."""
    return _derived_part(SPEC_MODELS[kind], spec)


def _derived_part(model: type[BaseModel], spec: Mapping[str, Any]) -> dict[str, Any]:
    sources = next(_SOURCES[m] for m in model.__mro__ if m in _SOURCES)
    ours = {f.name for source in sources for f in dataclasses.fields(source)}
    out = {}
    for key, value in spec.items():
        if key not in ours:
            continue
        sub = model.model_fields[key].annotation
        if isinstance(value, Mapping) and isinstance(sub, type) and issubclass(sub, BaseModel):
            value = _derived_part(sub, value)
        out[key] = value
    return out


# Each model subclasses its derived fields (a class: it keeps the schema's name, and mypy sees
# a model whose fields it cannot know, rather than a variable used as a type).
_DatasetFields: Any = derived(core.DatasetSpec)
_DeviceFields: Any = derived(ProfileDevice)


class DatasetSpec(_DatasetFields):
    pass


class DeviceSpec(_DeviceFields):
    pass


_CostFields: Any = derived(core.CostSpec)


class CostSpec(_CostFields):
    latency_table_id: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _latency_needs_table(self) -> CostSpec:
        if self.metric == "latency" and self.latency_table_id is None:
            raise PydanticCustomError(
                "missing",
                "metric 'latency' needs a latency_table_id (GET /v1/latency-tables)",
                {"field": "latency_table_id"},
            )
        return self


_SearchFields: Any = derived(
    core.SearchSpec,
    SearchResources,
    nested={core.DatasetSpec: DatasetSpec, core.CostSpec: CostSpec},
)
_RetrainFields: Any = derived(
    core.RetrainSpec, RetrainResources, nested={core.DatasetSpec: DatasetSpec}
)
_ProfileFields: Any = derived(
    core.ProfileSpec, ProfileResources, nested={ProfileDevice: DeviceSpec}
)


class SearchSpec(_SearchFields):
    pass


class RetrainSpec(_RetrainFields):
    architecture_id: int = Field(..., ge=1)


class ProfileSpec(_ProfileFields):
    pass


SPEC_MODELS: dict[str, type[Strict]] = {
    "search": SearchSpec,
    "retrain": RetrainSpec,
    "profile": ProfileSpec,
}


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
    traceback_tail: str | None = Field(
        None,
        description=("the last lines of the failing worker's traceback (kept to 50 lines / 8 KB)"),
    )
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

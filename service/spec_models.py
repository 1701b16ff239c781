"""The request bodies' base (:class:`Strict`) and the job spec models, derived from the spec
dataclasses of the core (:mod:`densenas_core.specs`) and the workers (:mod:`workers.payload`).

Job specs are the one vocabulary shared by REST, workers and ``densenas_core`` (docs/DESIGN.md,
"Job specs"); they forbid unknown keys so a typo (``epoch`` for ``epochs``) is a 422 naming the
field instead of a silently ignored setting that costs an hour of cluster time. Types are strict
(``true`` is not an integer, ``"3"`` is not a number) and no string may hold a NUL byte. A search
space is only typed here (a preset name or an object), never looked up or built on the event
loop — the core imports torch, and an unchecked description can take unbounded time to build:
:mod:`service.admission` does both in a worker thread, counting a description's blocks, paths
and channels against the configured limits first (the ``densenas_core.spaces.SpaceError``
message names the offending sub-field, which becomes part of the error location:
``spec.space.stages[0].widths``). :mod:`service.schemas` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workers.payload import ProfileDevice, ProfileResources, RetrainResources, SearchResources

from . import core

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
    latency_table_id: int | None = Field(
        None, ge=1, description="latency table for metric 'latency' (required then)"
    )

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
    architecture_id: int = Field(..., ge=1, description="the architecture to retrain")


class ProfileSpec(_ProfileFields):
    pass


SPEC_MODELS: dict[str, type[Strict]] = {
    "search": SearchSpec,
    "retrain": RetrainSpec,
    "profile": ProfileSpec,
}


# -- sweeps (service.sweeps runs them) ---------------------------------------------------------

MAX_GRID_KEYS = 8
MAX_VALUES_PER_KEY = 32
MAX_TRIALS = 64

Scalar = str | int | float | bool | None
GridValue = Scalar | dict[str, Any]


class SweepSpec(Strict):
    """A family of searches: ``search`` with each combination of the ``grid`` values."""

    search: SearchSpec = Field(
        default_factory=SearchSpec,
        description="the base search spec every trial starts from (defaults filled in)",
    )
    grid: Annotated[
        dict[str, Annotated[list[GridValue], Field(min_length=1, max_length=MAX_VALUES_PER_KEY)]],
        Field(
            min_length=1,
            max_length=MAX_GRID_KEYS,
            description=(
                "search-spec field → the values to try, dotted for nested fields "
                '(e.g. {"cost.target": [12e6, 20e6], "seed": [0, 1]}); every combination is '
                f"one trial (at most {MAX_TRIALS}), validated like a search job's spec"
            ),
        ),
    ]
    max_concurrent: int = Field(
        2, ge=1, le=64, description="trials that run at once (each holds a search's workers)"
    )
    scheduler: Literal["asha"] | None = Field(
        None,
        description=(
            "null: every trial runs all its epochs; asha: Ray Tune's ASHA stops trials whose "
            "val_acc trails at each rung (epochs grace_epochs, ×2, …)"
        ),
    )
    grace_epochs: int = Field(
        1, ge=1, le=1000, description="asha: epochs every trial runs before it may be stopped"
    )

    @field_validator("grid")
    @classmethod
    def _paths_exist(cls, grid: dict[str, list[GridValue]]) -> dict[str, list[GridValue]]:
        for path in grid:
            field_path(path)
        if math.prod(len(v) for v in grid.values()) > MAX_TRIALS:
            raise ValueError(f"the grid has more than {MAX_TRIALS} combinations")
        return grid


def field_path(path: str) -> list[str]:
    """The parts of a dotted search-spec field path, or ``ValueError`` naming what is not a
    field (grid keys address the search spec's own fields and nested models only)."""
    parts = path.split(".")
    model: type[BaseModel] | None = SearchSpec
    for i, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            where = ".".join(parts[:i]) or "the search spec"
            raise ValueError(f"{path!r}: {part!r} is not a field of {where}")
        ann = model.model_fields[part].annotation
        nested = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        model = next((a for a in nested if issubclass(a, BaseModel)), None)
        if i < len(parts) - 1 and model is None:
            raise ValueError(f"{path!r}: {part!r} has no fields")
    return parts

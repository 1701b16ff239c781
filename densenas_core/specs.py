"""The job specs' science part, declared once: every field, its default, its bounds and its
description (docs/DESIGN.md, "Job specs").

:class:`SearchSpec`, :class:`RetrainSpec` and :class:`ProfileSpec` (with the nested
:class:`DatasetSpec` and :class:`CostSpec`) are frozen dataclasses. A field's type says what it
accepts (``int`` takes no ``bool``; ``float`` takes an ``int``, stored as a float; a
``Literal`` lists the choices; ``X | None`` allows null) and its ``Annotated`` metadata holds
its :class:`Bounds`, :class:`MaxLen` and :class:`Doc`. One validator reads them all: building a
spec — by :meth:`Spec.from_dict` from a job spec's JSON, or by keywords — checks every field,
then the spec's cross-field rules (:meth:`Spec.check`), and raises a :class:`SpecError` whose
message starts with the field's path (``dataset.limit_train: expected an integer ≥ 1, got 0``).
Unknown keys are refused, naming the key and the fields allowed.

Everything else reads these declarations instead of repeating them: the search and retrain
loops take the specs themselves as their configs (``SearchConfig`` is :class:`SearchSpec`,
``RetrainConfig`` is :class:`RetrainSpec`), the workers build them from a job's spec, and the
control plane derives its request schemas from them, adding only the fields that say where and
how a job runs (workers, GPUs, checkpoints) or which stored rows it uses.

This module imports only the standard library: the control plane reads it at start-up without
paying for torch.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Self, Union, get_args, get_origin

__all__ = [
    "Bounds",
    "MaxLen",
    "Doc",
    "SpecError",
    "DataError",
    "Spec",
    "DatasetSpec",
    "CostSpec",
    "SearchSpec",
    "RetrainSpec",
    "ProfileSpec",
    "JOB_SPECS",
    "DATASET_NAMES",
    "COST_METRICS",
    "COST_MODES",
    "COST_ESTIMATOR_NAMES",
    "SCHEDULES",
    "WEIGHT_SHARING",
    "DEFAULT_SPACE",
    "spec_fields",
]


# -- field metadata ------------------------------------------------------------------------------

#: a bound of :class:`Bounds` (None: none)
Bound = float | None


@dataclass(frozen=True)
class Bounds:
    """Inclusive (``ge``, ``le``) and exclusive (``gt``, ``lt``) bounds of a number."""

    ge: Bound = None
    le: Bound = None
    gt: Bound = None
    lt: Bound = None

    def violated(self, v: float) -> str | None:
        """The first bound ``v`` breaks, as text (``"≥ 1"``), else None."""
        checks = (
            ("≥", self.ge, operator.ge),
            (">", self.gt, operator.gt),
            ("≤", self.le, operator.le),
            ("<", self.lt, operator.lt),
        )
        for sign, bound, holds in checks:
            if bound is not None and not holds(v, bound):
                return f"{sign} {bound:g}" if isinstance(bound, float) else f"{sign} {bound}"
        return None


@dataclass(frozen=True)
class MaxLen:
    """The most characters a string may hold."""

    n: int


@dataclass(frozen=True)
class Doc:
    """What a field means (shown in the API's schema)."""

    text: str


class SpecError(ValueError):
    """A job spec that cannot be used; ``where`` is the field's path (``dataset.root``),
    ``kind`` what went wrong (``type``, ``range``, ``missing``, ``extra``, ``value``)."""

    def __init__(self, where: str, message: str, kind: str = "value") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where, self.message, self.kind = where, message, kind


class DataError(SpecError):
    """A dataset description that cannot be loaded; the message names the field."""


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where and not name.startswith("[") else f"{where}{name}"


# -- the validator -------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def spec_fields(cls: type[Spec]) -> list[tuple[dataclasses.Field[Any], Any, tuple[Any, ...]]]:
    """(field, type, metadata) of every field of the spec dataclass ``cls``, in order; the type
    without its ``Annotated`` wrapper, whose extras are the metadata."""
    return [(f, *_unwrap(_hints(cls)[f.name], ())) for f in dataclasses.fields(cls)]


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _optional(tp: Any) -> tuple[Any, bool]:
    """(``tp`` without ``None``, whether ``None`` was allowed)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            rest = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007 (at run time)
            return rest, True
    return tp, False


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _describe(get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {len(get_args(tp))} numbers"
    names = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "an object",
    }
    return names.get(origin or tp, "an object")


def _unwrap(tp: Any, meta: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """``tp`` without its ``Annotated`` wrapper; its extras added to ``meta``."""
    if get_origin(tp) is Annotated:
        tp, *extras = get_args(tp)
        meta = meta + tuple(extras)
    return tp, meta


def _conform(v: Any, tp: Any, meta: tuple[Any, ...], where: str, error: type[SpecError]) -> Any:
    """``v`` as a value of ``tp`` (nested specs built, lists of a tuple type made tuples, ints of
    a float type made floats), or ``error`` naming ``where``."""
    tp, meta = _unwrap(tp, meta)
    tp, nullable = _optional(tp)
    tp, meta = _unwrap(tp, meta)
    if v is None and nullable:
        return None
    null = " (or null)" if nullable else ""
    if isinstance(tp, type) and issubclass(tp, Spec):
        if v is None or isinstance(v, (Mapping, tp)):
            return tp.from_dict(v)
        raise tp.ERROR(where, f"expected an object{null}, got {_short(v)}", "type")
    out, ok = _conform_plain(v, tp, where, error)
    if not ok:
        raise error(where, f"expected {_describe(tp)}{null}, got {_short(v)}", "type")
    for m in meta:
        if isinstance(m, MaxLen) and len(out) > m.n:
            raise error(where, f"expected at most {m.n} characters, got {len(out)}", "range")
        broken = m.violated(out) if isinstance(m, Bounds) else None
        if broken:
            raise error(where, f"expected {_describe(tp)} {broken}{null}, got {_short(v)}", "range")
    return out


def _conform_plain(v: Any, tp: Any, where: str, error: type[SpecError]) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin is Literal:
        return v, any(type(v) is type(a) and v == a for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return v, any(_conform_plain(v, a, where, error)[1] for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(v, (list, tuple)) or len(v) != len(args):
            return v, False
        return tuple(
            _conform(x, a, (), f"{where}[{i}]", error) for i, (x, a) in enumerate(zip(v, args))
        ), True
    if origin is dict or tp is dict:
        return v, isinstance(v, Mapping)
    if tp is float:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (float(v) if number else v), number
    if tp is int:
        return v, isinstance(v, int) and not isinstance(v, bool)
    if tp in (bool, str):
        return v, isinstance(v, tp)
    if tp is Any:
        return v, True
    raise TypeError(f"{where}: no spec validation for {tp!r}")  # a declaration error


class Spec:
    """Base of the spec dataclasses: the validator (run when one is built), :meth:`from_dict`
    and :meth:`to_dict`.

    ``WHERE``: the spec's path inside a job spec (``"dataset"``), which prefixes every message;
    a nested spec sits in the field of that name. ``WHAT``: the job kind, for the message on an
    unknown key (``epoch: unknown search field``). ``ERROR``: the :class:`SpecError` raised.
    """

    WHERE: ClassVar[str] = ""
    WHAT: ClassVar[str] = ""
    ERROR: ClassVar[type[SpecError]] = SpecError
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by @dataclass

    def __post_init__(self) -> None:
        for f, tp, meta in spec_fields(type(self)):
            value = getattr(self, f.name)
            fixed = _conform(value, tp, meta, _join(self.WHERE, f.name), self.ERROR)
            if fixed is not value:
                object.__setattr__(self, f.name, fixed)
        try:
            self.check()
        except SpecError as e:
            raise self.ERROR(_join(self.WHERE, e.where), e.message, e.kind) from None

    def check(self) -> None:
        """The rules between fields, run after each field is valid: raise a
        :class:`SpecError` whose ``where`` names the field relative to this spec. The control
        plane's schemas call it on their own validated models (same field names)."""

    @classmethod
    def from_dict(cls, d: Any = None) -> Self:
        """``d`` itself if already a ``cls``, else ``cls`` from the mapping ``d`` (missing keys
        take their defaults; None is every default)."""
        if isinstance(d, cls):
            return d
        d = {} if d is None else d
        if not isinstance(d, Mapping):
            raise cls.ERROR(cls.WHERE, f"expected an object, got {_short(d)}", "type")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names), key=str)
        if unknown:
            what = f"{cls.WHAT} field" if cls.WHAT else "field"
            raise cls.ERROR(
                _join(cls.WHERE, str(unknown[0])),
                f"unknown {what} (allowed: {', '.join(names)})",
                "extra",
            )
        return cls(**d)

    @classmethod
    def bounds(cls, name: str) -> Bounds:
        """The :class:`Bounds` of the field ``name`` (none: ``Bounds()``)."""
        meta = next(m for f, _tp, m in spec_fields(cls) if f.name == name)
        return next((m for m in meta if isinstance(m, Bounds)), Bounds())

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON values (tuples as lists, nested specs as objects)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(v: Any) -> Any:
    if isinstance(v, Spec):
        return v.to_dict()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return copy.deepcopy(v)


# -- the specs -----------------------------------------------------------------------------------

DatasetName = Literal["fashion-mnist", "cifar10", "imagefolder", "synthetic"]
CostMetric = Literal["flops", "latency"]
CostMode = Literal["log", "target", "none"]
CostEstimator = Literal["chained", "local"]
ScheduleName = Literal["scaled", "paper"]
WeightSharing = Literal["entangled", "separate"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
COST_METRICS: tuple[str, ...] = get_args(CostMetric)
COST_MODES: tuple[str, ...] = get_args(CostMode)
COST_ESTIMATOR_NAMES: tuple[str, ...] = get_args(CostEstimator)
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
WEIGHT_SHARING: tuple[str, ...] = get_args(WeightSharing)
#: the input size of a dataset whose spec leaves ``input_size`` null
DEFAULT_INPUT_SIZE = {"fashion-mnist": 32, "cifar10": 32, "imagefolder": 224, "synthetic": 32}
DEFAULT_SPACE = "mbv2-small"

SpaceRef = Annotated[
    str | dict[str, Any], Doc("A preset name or a custom space description (an object).")
]
Epochs = Annotated[int, Bounds(ge=1, le=1000)]
BatchSize = Annotated[int, Bounds(ge=1, le=4096)]
Seed = Annotated[int, Bounds(ge=0, le=2**31 - 1)]
InputSize = Annotated[int | None, Bounds(ge=8, le=2048)]
Images = Annotated[int, Bounds(ge=0, le=100_000)]
Fraction = Annotated[float, Bounds(ge=0, lt=1)]
Decay = Annotated[float, Bounds(ge=0, le=1)]
LearningRate = Annotated[float, Bounds(gt=0, le=100)]
MinLearningRate = Annotated[float, Bounds(ge=0, le=100)]
Limit = Annotated[int | None, Bounds(ge=1, le=10_000_000)]


@dataclass(frozen=True)
class DatasetSpec(Spec):
    """The ``dataset`` of a search or retrain spec (see :mod:`densenas_core.data`)."""

    WHERE: ClassVar[str] = "dataset"
    ERROR: ClassVar[type[SpecError]] = DataError

    name: Annotated[
        DatasetName, Doc("dataset to train on ('synthetic': generated images, no download)")
    ] = "fashion-mnist"
    root: Annotated[
        str | None,
        MaxLen(4096),
        Doc("dataset directory (required for 'imagefolder'); null: the default location"),
    ] = None
    limit_train: Annotated[
        Limit,
        Doc(
            "search: cap on the training pool (seeded) before the per-class split; "
            "retrain: cap on the training set; null: all"
        ),
    ] = None
    limit_val: Annotated[
        Limit, Doc("search: cap on the arch split; retrain: cap on the test set; null: all")
    ] = None
    num_classes: Annotated[
        int | None, Bounds(ge=2, le=100_000), Doc("seeded random subset of the classes")
    ] = None
    input_size: Annotated[
        InputSize,
        Doc(
            "input resolution in pixels, 8..2048; null: the space's (search) or the "
            "dataset's default (32; 224 for imagefolder)"
        ),
    ] = None

    def check(self) -> None:
        if self.name == "imagefolder" and not self.root:
            raise SpecError("root", "imagefolder needs a root directory", "missing")

    @property
    def resolved_input_size(self) -> int:
        return self.input_size or DEFAULT_INPUT_SIZE[self.name]

    @classmethod
    def from_dict(cls, d: Any = None, *, default_input_size: int | None = None) -> DatasetSpec:
        """As :meth:`Spec.from_dict`; a null ``input_size`` becomes ``default_input_size`` when
        given (the space's resolution), except for image folders."""
        spec = super().from_dict(d)
        if (
            spec.input_size is None
            and default_input_size is not None
            and spec.name != "imagefolder"
        ):
            spec = dataclasses.replace(spec, input_size=default_input_size)
        return spec


@dataclass(frozen=True)
class CostSpec(Spec):
    """The ``cost`` term of a search's architecture loss (see :mod:`densenas_core.cost`)."""

    WHERE: ClassVar[str] = "cost"

    metric: Annotated[
        CostMetric,
        Doc(
            "what the cost term measures: 'flops' (multiply-adds) or 'latency' (ms, from "
            "a latency table)"
        ),
    ] = "flops"
    mode: Annotated[
        CostMode,
        Doc(
            "'log': lam\u00b7log(cost)/log(tau); 'target': lam\u00b7max(0, "
            "log(cost/target)); 'none': no cost term"
        ),
    ] = "log"
    lam: Annotated[
        float, Bounds(ge=0, le=100), Doc("weight of the cost term, 0..100 (0: none)")
    ] = 0.15
    tau: Annotated[float | None, Bounds(gt=1), Doc("log mode: the cost scale (> 1)")] = None
    target: Annotated[float | None, Bounds(gt=0), Doc("target mode: the budget")] = None
    estimator: Annotated[
        CostEstimator,
        Doc(
            "'chained': DenseNAS's expected cost along the routing paths; 'local': the "
            "supplementary A.5 baseline (every block counted as if on the path)."
        ),
    ] = "chained"

    def check(self) -> None:
        if self.mode == "target" and self.target is None:
            raise SpecError("target", "mode 'target' needs a target", "missing")


@dataclass(frozen=True)
class SearchSpec(Spec):
    """The algorithm's part of a ``search`` job spec: the config of
    :func:`densenas_core.search.run_search` (``SearchConfig``)."""

    WHAT: ClassVar[str] = "search"

    space: SpaceRef = DEFAULT_SPACE
    dataset: Annotated[DatasetSpec, Doc("the dataset")] = field(default_factory=DatasetSpec)
    epochs: Annotated[Epochs, Doc("search epochs, 1..1000")] = 4
    warmup_epochs: Annotated[
        int,
        Bounds(ge=0, le=1000),
        Doc("leading epochs that train only the weights (no arch updates), 0..epochs"),
    ] = 1
    batch_size: Annotated[BatchSize, Doc("per-worker batch size, 1..4096")] = 64
    seed: Annotated[Seed, Doc("random seed (data split, init), 0..2^31-1")] = 0
    schedule: Annotated[
        ScheduleName,
        Doc(
            "'scaled' (default): weight lr 0.2·√(global batch/352) with a linear warm-up, arch lr "
            "2.1/arch steps (clamped to [3e-4, 0.05]), entangled op weights; 'paper': the paper's "
            "0.2, 3e-4, no warm-up, separate op weights."
        ),
    ] = "scaled"
    w_lr: Annotated[LearningRate | None, Doc("Weight lr; null: from `schedule`.")] = None
    w_lr_min: Annotated[MinLearningRate, Doc("final weight lr of the cosine schedule")] = 1e-4
    lr_warmup_steps: Annotated[
        int | None,
        Bounds(ge=0, le=10_000_000),
        Doc(
            "Linear weight-lr warm-up steps; null: from `schedule` (5 % of the weight steps, "
            "5..500, for 'scaled'; 0 for 'paper')."
        ),
    ] = None
    w_momentum: Annotated[Fraction, Doc("SGD momentum of the weights, 0..<1")] = 0.9
    w_wd: Annotated[Decay, Doc("weight decay of the weights, 0..1")] = 4e-5
    a_lr: Annotated[LearningRate | None, Doc("α/β Adam lr; null: from `schedule`.")] = None
    a_betas: Annotated[
        tuple[Fraction, Fraction], Doc("Adam betas of the arch parameters, each 0..<1")
    ] = (0.5, 0.999)
    a_wd: Annotated[Decay, Doc("weight decay of the arch parameters, 0..1")] = 1e-3
    weight_sharing: Annotated[
        WeightSharing | None,
        Doc(
            "'entangled': the MBConv candidates of a row are slices of one kernel; 'separate': "
            "one module per op (the paper); null: from `schedule`."
        ),
    ] = None
    bn_calibration: Annotated[
        Images,
        Doc(
            "Training images used to re-estimate BN statistics of the derived sub-network before "
            "each evaluation; 0: evaluate with batch statistics."
        ),
    ] = 512
    cost: Annotated[CostSpec, Doc("the cost term of the architecture loss")] = field(
        default_factory=CostSpec
    )
    val_fraction: Annotated[
        float,
        Bounds(gt=0, lt=1),
        Doc("per class, share of the training pool held out to update the arch parameters, (0, 1)"),
    ] = 0.2

    def check(self) -> None:
        if self.warmup_epochs > self.epochs:
            raise SpecError(
                "warmup_epochs",
                f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs})",
                "range",
            )


@dataclass(frozen=True)
class RetrainSpec(Spec):
    """The training part of a ``retrain`` job spec: the config of
    :func:`densenas_core.retrain.run_retrain` (``RetrainConfig``).

    The paper's setting (ImageNet, docs/algorithm.md §Retrain schedule): 240 epochs, batch
    1024, lr 0.5 cosine to 1e-4, momentum 0.9, wd 4e-5, label smoothing 0.1 — the defaults here
    are scaled for small runs.
    """

    WHAT: ClassVar[str] = "retrain"

    dataset: Annotated[DatasetSpec, Doc("the dataset")] = field(default_factory=DatasetSpec)
    epochs: Annotated[Epochs, Doc("training epochs, 1..1000")] = 10
    batch_size: Annotated[BatchSize, Doc("per-worker batch size, 1..4096")] = 128
    lr: Annotated[LearningRate, Doc("initial SGD lr (cosine to lr_min), (0, 100]")] = 0.1
    lr_min: Annotated[MinLearningRate, Doc("final lr of the cosine schedule")] = 1e-4
    momentum: Annotated[Fraction, Doc("SGD momentum, 0..<1")] = 0.9
    wd: Annotated[Decay, Doc("weight decay, 0..1")] = 4e-5
    label_smoothing: Annotated[Fraction, Doc("label smoothing of the cross-entropy, 0..<1")] = 0.1
    seed: Annotated[Seed, Doc("random seed, 0..2^31-1")] = 0
    #: After a few dozen steps the running averages still carry their init (a 2-epoch, 46-step
    #: retrain scored 9 % in eval mode and 29 % with batch statistics), so short retrains
    #: measured nothing without precise BN.
    precise_bn: Annotated[
        Images,
        Doc(
            "Training images over which BN statistics are re-estimated before each evaluation "
            "(precise BN); 0 keeps the running averages, which short retrains leave near "
            "init."
        ),
    ] = 1024


@dataclass(frozen=True)
class ProfileSpec(Spec):
    """The measuring part of a ``profile`` job spec (see
    :func:`densenas_core.latency.profile_space`)."""

    WHAT: ClassVar[str] = "profile"

    space: SpaceRef = DEFAULT_SPACE
    batch_size: Annotated[BatchSize, Doc("batch size of the timed forward passes, 1..4096")] = 1
    input_size: Annotated[InputSize, Doc("input resolution in pixels; null: the space's")] = None
    warmup: Annotated[
        int, Bounds(ge=0, le=10_000), Doc("untimed runs per op before timing, 0..10000")
    ] = 10
    repeats: Annotated[int, Bounds(ge=1, le=10_000), Doc("timed runs per op, 1..10000")] = 30


#: the science part of each job kind's spec
JOB_SPECS: dict[str, type[Spec]] = {
    "search": SearchSpec,
    "retrain": RetrainSpec,
    "profile": ProfileSpec,
}

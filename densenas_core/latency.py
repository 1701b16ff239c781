"""Latency lookup tables keyed by op signature, and the profiler that fills them.

The reference stores latencies as a positional nested list valid for one exact configuration.
Here every entry is keyed by what determines its cost — :class:`OpKey` (op code, C_in, C_out,
stride, input H×W, batch, dtype, device kind) — so one table serves every space and every derived
architecture whose ops it contains, tables from several runs on one device merge, and a missing
op is an error that names it instead of a silently wrong index.

Measuring (docs/algorithm.md §Latency tables): each op is timed alone at its real input
shape, in eval mode under ``torch.inference_mode``; warm-up runs are discarded; per-run times
are kept as median, p10, p90 and standard deviation (the median is what predictions use). CPU
runs are timed with ``time.perf_counter``, CUDA runs with ``torch.cuda.Event`` pairs and a
synchronize.

Besides the op codes of :mod:`densenas_core.ops`, a table holds ``conv3x3`` (the stem conv + BN +
activation) and ``linear`` (global average pool + classifier; C_in features → C_out classes).
``skip`` entries are recorded as 0 ms without timing: a skip layer is dropped from derived
networks, so it costs nothing in the network whose latency is predicted.

The timing itself (``time_module``, ``LatencyStat``, ``measure_network_latency``, ...) is in
:mod:`densenas_core.profiling`, re-exported here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from .flops import CLASSIFIER_OP, STEM_OP
from .ops import ConvBnAct, build_op
from .profiling import _DTYPES, _device_info
from .profiling import LatencyStat as LatencyStat
from .profiling import cpu_threads as cpu_threads
from .profiling import dtype_name as dtype_name
from .profiling import measure_network_latency as measure_network_latency
from .profiling import time_module as time_module
from .spaces import get_space
from .specs import ProfileSpec
from .summary import OpSig, predict_cost

TABLE_VERSION = 1


# -- keys ------------------------------------------------------------------------------------

_KEY_RE = re.compile(
    r"^(?P<op>[a-z0-9_]+)/(?P<c_in>\d+)-(?P<c_out>\d+)/s(?P<stride>\d+)/"
    r"(?P<h>\d+)x(?P<w>\d+)/b(?P<batch>\d+)/(?P<dtype>[a-z0-9]+)/"
    r"(?P<device>[a-z]+)$"
)


@dataclass(frozen=True, order=True)
class OpKey(OpSig):
    """An :class:`OpSig` as measured: at a batch size, dtype and device kind."""

    batch: int = 1
    dtype: str = "float32"
    device: str = "cpu"  # device kind: "cpu" | "cuda"

    def __str__(self) -> str:
        return (
            f"{self.op}/{self.c_in}-{self.c_out}/s{self.stride}/{self.h}x{self.w}/"
            f"b{self.batch}/{self.dtype}/{self.device}"
        )

    @classmethod
    def parse(cls, text: str) -> OpKey:
        m = _KEY_RE.match(text)
        if not m:
            raise ValueError(
                f"not an op key: {text!r} (expected e.g. "
                "'mb_k3_e6/16-24/s2/112x112/b32/float32/cuda')"
            )
        return cls.from_fields(m.groupdict())

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> OpKey:
        """The key from a mapping with its field names (a parsed key, a table entry)."""
        return cls(
            str(d["op"]),
            int(d["c_in"]),
            int(d["c_out"]),
            int(d["stride"]),
            int(d["h"]),
            int(d["w"]),
            int(d["batch"]),
            str(d["dtype"]),
            str(d["device"]),
        )

    @property
    def sig(self) -> OpSig:
        return OpSig(self.op, self.c_in, self.c_out, self.stride, self.h, self.w)


# -- tables ----------------------------------------------------------------------------------


class LatencyTableError(ValueError):
    """A table document that cannot be read, or tables that cannot be merged."""


@dataclass
class LatencyTable:
    """Measured latency per :class:`OpKey` for one device, batch and dtype."""

    device_name: str
    device_kind: str  # "cpu" | "cuda"
    batch: int
    dtype: str = "float32"
    method: str = "cpu-perf_counter"  # | "cuda-events"
    input_size: int | None = None  # network input resolution the entries were profiled for
    torch_version: str = field(default_factory=lambda: torch.__version__)
    cuda_version: str | None = None
    driver_version: str | None = None
    num_threads: int | None = None
    warmup: int | None = None
    repeats: int | None = None
    spaces: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    build_seconds: float | None = None
    entries: dict[OpKey, LatencyStat] = field(default_factory=dict)

    # -- lookup ----------------------------------------------------------------------------
    def key(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> OpKey:
        return OpKey(op, c_in, c_out, stride, h, w, self.batch, self.dtype, self.device_kind)

    def stat(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> LatencyStat:
        k = self.key(op, c_in, c_out, stride, h, w)
        try:
            return self.entries[k]
        except KeyError:
            raise KeyError(f"latency table ({self.device_name}) has no entry {k}") from None

    def get(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> float:
        """Median ms of ``op`` at this table's batch, dtype and device (KeyError names a miss)."""
        return self.stat(op, c_in, c_out, stride, h, w).median_ms

    def __call__(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> float:
        return self.get(op, c_in, c_out, stride, h, w)

    def __contains__(self, sig: OpSig | OpKey) -> bool:
        s = sig.sig if isinstance(sig, OpKey) else sig
        return self.key(s.op, s.c_in, s.c_out, s.stride, s.h, s.w) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def missing(self, sigs: Iterable[OpSig]) -> list[OpSig]:
        """The signatures this table cannot answer (what a profile run still has to measure)."""
        return [s for s in sigs if s not in self]

    def as_mapping(self) -> dict[OpSig, float]:
        """{OpSig: median ms} for cost tables that key by shape only."""
        return {
            k.sig: v.median_ms
            for k, v in self.entries.items()
            if (k.batch, k.dtype, k.device) == (self.batch, self.dtype, self.device_kind)
        }

    # -- combining -------------------------------------------------------------------------
    def compatible_with(self, other: LatencyTable) -> bool:
        return (self.device_name, self.device_kind, self.batch, self.dtype) == (
            other.device_name,
            other.device_kind,
            other.batch,
            other.dtype,
        )

    def merge(self, other: LatencyTable, *, overwrite: bool = False) -> LatencyTable:
        """A new table with the entries of both (same device, batch and dtype required)."""
        if not self.compatible_with(other):
            raise LatencyTableError(
                "cannot merge tables measured under different conditions: "
                f"{self.device_name}/{self.device_kind}/b{self.batch}/{self.dtype} vs "
                f"{other.device_name}/{other.device_kind}/b{other.batch}/{other.dtype}"
            )
        entries = dict(self.entries)
        for k, v in other.entries.items():
            if overwrite or k not in entries:
                entries[k] = v
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "entries"}
        d["spaces"] = list(dict.fromkeys([*self.spaces, *other.spaces]))
        if self.input_size != other.input_size:
            d["input_size"] = None
        if self.method != other.method:
            d["method"] = f"{self.method}+{other.method}"
        return LatencyTable(**d, entries=entries)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        meta = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "entries"}
        return {
            "version": TABLE_VERSION,
            **meta,
            "entries": [
                {
                    "key": str(k),
                    "op": k.op,
                    "c_in": k.c_in,
                    "c_out": k.c_out,
                    "stride": k.stride,
                    "h": k.h,
                    "w": k.w,
                    "batch": k.batch,
                    "dtype": k.dtype,
                    "device": k.device,
                    **asdict(v),
                }
                for k, v in sorted(self.entries.items())
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> LatencyTable:
        if not isinstance(doc, Mapping):
            raise LatencyTableError("latency table: expected an object")
        if doc.get("version") != TABLE_VERSION:
            raise LatencyTableError(
                f"version: unsupported latency table version "
                f"{doc.get('version')!r} (reads {TABLE_VERSION})"
            )
        meta_fields = {f for f in cls.__dataclass_fields__ if f != "entries"}
        for req in ("device_name", "device_kind", "batch", "entries"):
            if req not in doc:
                raise LatencyTableError(f"{req}: field required")
        if doc["device_kind"] not in ("cpu", "cuda"):
            raise LatencyTableError(
                f"device_kind: expected cpu or cuda, got {doc['device_kind']!r}"
            )
        meta = {k: v for k, v in doc.items() if k in meta_fields}
        if not isinstance(doc["entries"], list):
            raise LatencyTableError("entries: expected a list")
        entries: dict[OpKey, LatencyStat] = {}
        for i, e in enumerate(doc["entries"]):
            try:
                k = OpKey.from_fields(e)
                entries[k] = LatencyStat(
                    float(e["median_ms"]),
                    float(e["p10_ms"]),
                    float(e["p90_ms"]),
                    float(e["std_ms"]),
                    int(e["n"]),
                )
            except (KeyError, TypeError, ValueError) as err:
                raise LatencyTableError(f"entries[{i}]: malformed entry ({err!r})") from None
        table = cls(**meta)
        table.spaces = list(table.spaces)
        table.entries = entries
        return table


# -- what a space needs ----------------------------------------------------------------------


def space_op_signatures(
    space: Any, input_size: int | None = None, *, in_channels: int = 3, num_classes: int = 1000
) -> list[OpSig]:
    """Every candidate op of ``space`` at its real input shape, deduplicated, in network order.

    Stem conv, the fixed stem op, every alignment branch × ``align_ops``, every basic layer ×
    ``layer_ops``, the tail's 1×1 convs (one per tail input, where the derived network has one:
    always for MBV2, else when the widths differ) and the classifier.
    """
    res = input_size or space.input_size
    out: dict[OpSig, None] = {}

    def add(*a: Any) -> None:
        out.setdefault(OpSig(*a))

    size = [b.size(res) for b in space.blocks]
    s0 = size[0]
    add(STEM_OP, in_channels, space.stem.channels, space.stem.stride, res, res)
    if space.stem.fixed_op:
        add(space.stem.fixed_op, space.stem.channels, space.stem.channels, 1, s0, s0)
    tail = space.tail
    for p in space.paths:
        src, dst = space.blocks[p.src], space.blocks[p.dst]
        if p.dst == tail.index:
            if space.family == "mbv2" or src.channels != tail.channels:
                add("conv1x1", src.channels, tail.channels, p.stride, size[p.src], size[p.src])
            continue
        for op in space.align_ops:
            add(op, src.channels, dst.channels, p.stride, size[p.src], size[p.src])
    for b in space.routing_blocks:
        if b.num_layers:
            for op in space.layer_ops:
                add(op, b.channels, b.channels, 1, size[b.index], size[b.index])
    add(CLASSIFIER_OP, tail.channels, num_classes, 1, size[tail.index], size[tail.index])
    return list(out)


def build_sig_module(sig: OpSig, act: str = "relu6") -> nn.Module:
    """The module whose run time is ``sig``'s latency."""
    if sig.op == STEM_OP:
        return ConvBnAct(sig.c_in, sig.c_out, kernel=3, stride=sig.stride, act=act)
    if sig.op == CLASSIFIER_OP:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(sig.c_in, sig.c_out))
    return build_op(sig.op, sig.c_in, sig.c_out, sig.stride, act=act)


def profile_space(
    space: Any,
    *,
    device: str | torch.device = "cpu",
    batch: int = ProfileSpec.batch_size,
    input_size: int | None = None,
    warmup: int = ProfileSpec.warmup,
    repeats: int = ProfileSpec.repeats,
    dtype: torch.dtype | str = torch.float32,
    ops_filter: Callable[[OpSig], bool] | Collection[str] | None = None,
    progress: Callable[[int, int, OpSig], None] | None = None,
    in_channels: int = 3,
    num_classes: int = 1000,
    table: LatencyTable | None = None,
    num_threads: int | None = None,
) -> LatencyTable:
    """Time every candidate op of ``space`` alone at its real shape; returns a table.

    ``ops_filter``: a predicate on :class:`OpSig` or a collection of op codes to keep.
    ``progress(done, total, sig)`` is called after each op (raise from it to stop early, e.g.
    ``reporting.Stopped`` on cancellation). ``table``: an existing compatible table whose
    entries are kept and not re-measured (the result is a merged copy). ``num_threads``: CPU
    intra-op threads while timing (recorded in the table; see :func:`cpu_threads`).
    """
    dev = torch.device(device)
    with cpu_threads(num_threads if dev.type == "cpu" else None):
        return _profile_space(
            space,
            dev,
            batch,
            input_size,
            warmup,
            repeats,
            dtype,
            ops_filter,
            progress,
            in_channels,
            num_classes,
            table,
        )


def _profile_space(
    space: Any,
    dev: torch.device,
    batch: int,
    input_size: int | None,
    warmup: int,
    repeats: int,
    dtype: torch.dtype | str,
    ops_filter: Callable[[OpSig], bool] | Collection[str] | None,
    progress: Callable[[int, int, OpSig], None] | None,
    in_channels: int,
    num_classes: int,
    table: LatencyTable | None,
) -> LatencyTable:
    space = get_space(space)
    dt = _DTYPES[dtype_name(dtype)]
    res = input_size or space.input_size
    sigs = space_op_signatures(space, res, in_channels=in_channels, num_classes=num_classes)
    if isinstance(ops_filter, str):
        ops_filter = (ops_filter,)
    if ops_filter is not None:
        keep = ops_filter if callable(ops_filter) else (lambda s, c=set(ops_filter): s.op in c)
        sigs = [s for s in sigs if keep(s)]
    info = _device_info(dev)
    result = LatencyTable(
        batch=batch,
        dtype=dtype_name(dt),
        input_size=res,
        warmup=warmup,
        repeats=repeats,
        spaces=[space.name],
        **info,
    )
    if table is not None:
        if not result.compatible_with(table):
            raise LatencyTableError(
                "table: the given table was measured on another device, batch or dtype"
            )
        sigs = table.missing(sigs)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    act = space.stem.act
    t0 = time.perf_counter()
    for i, sig in enumerate(sigs, start=1):
        if sig.op == "skip":
            stat = LatencyStat(0.0, 0.0, 0.0, 0.0, 0)
        else:
            module = build_sig_module(sig, act).to(device=dev, dtype=dt)
            x = torch.randn(batch, sig.c_in, sig.h, sig.w, device=dev, dtype=dt)
            stat = LatencyStat.from_samples(time_module(module, x, warmup=warmup, repeats=repeats))
            del module, x
        result.entries[result.key(*asdict(sig).values())] = stat
        if progress is not None:
            progress(i, len(sigs), sig)
    result.build_seconds = time.perf_counter() - t0
    return result.merge(table) if table is not None else result


def predict_latency(
    arch: Any, table: LatencyTable, *, input_size: int | None = None, num_classes: int | None = None
) -> float:
    """Predicted network latency in ms: the sum of the table's medians over the arch's ops."""
    return predict_cost(arch, table, input_size=input_size, num_classes=num_classes)

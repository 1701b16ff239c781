"""An architecture's ops at their input shapes, its closed-form summary (mult-adds, parameters,
per-block table) and its predicted cost under a per-op lookup (e.g. a latency table)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .document import Architecture
from .flops import CLASSIFIER_OP, STEM_OP, op_mult_adds, op_params
from .presets import get_arch


@dataclass(frozen=True, order=True)
class OpSig:
    """An op at a shape, independent of how it is run (what a space or an architecture needs;
    the shape part of a latency table's key, :class:`densenas_core.latency.OpKey`)."""

    op: str
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int


@dataclass(frozen=True)
class OpSite(OpSig):
    """One op of a built architecture at its real input shape (the key of a cost table)."""

    part: str = field(kw_only=True)  # "stem" | "blocks[i].align" | "blocks[i].layers[j]" | …


def op_sites(
    arch: Architecture, input_size: int | None = None, num_classes: int | None = None
) -> list[OpSite]:
    """Every op of ``arch`` in execution order with its input shape.

    The stem is the pseudo-op ``conv3x3``, the classifier ``linear`` (input: the pooled map's
    channels at the last spatial size, output: classes).
    """
    res = input_size or arch.input_size
    classes = num_classes or arch.num_classes
    sites = [
        OpSite(STEM_OP, arch.in_channels, arch.stem.c_out, arch.stem.stride, res, res, part="stem")
    ]
    s = math.ceil(res / arch.stem.stride)
    for i, b in enumerate(arch.blocks):
        sites.append(OpSite(b.align_op, b.c_in, b.c_out, b.stride, s, s, part=f"blocks[{i}].align"))
        s = math.ceil(s / b.stride)
        sites.extend(
            OpSite(code, b.c_out, b.c_out, 1, s, s, part=f"blocks[{i}].layers[{j}]")
            for j, code in enumerate(b.layers)
        )
    if arch.tail_has_conv:
        sites.append(OpSite("conv1x1", arch.tail.c_in, arch.tail.c_out, 1, s, s, part="head"))
    sites.append(OpSite(CLASSIFIER_OP, arch.tail.c_out, classes, 1, s, s, part="classifier"))
    return sites


def arch_summary(
    arch: Architecture | Mapping[str, Any] | str,
    input_size: int | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Mult-adds, parameters, depth and a per-block table, in closed form (no forward pass).

    Equal to :func:`densenas_core.flops.count_flops_params` on the built network (tested).
    """
    a = get_arch(arch)
    res = input_size or a.input_size
    classes = num_classes or a.num_classes
    sites = op_sites(a, res, classes)

    def cost(s: OpSite) -> tuple[int, int]:
        return (
            op_mult_adds(s.op, s.c_in, s.c_out, s.stride, s.h),
            op_params(s.op, s.c_in, s.c_out, s.stride),
        )

    rows: list[dict[str, Any]] = []
    by_block: dict[int, dict[str, Any]] = {}
    total_m = total_p = 0
    for s in sites:
        m, p = cost(s)
        total_m += m
        total_p += p
        if s.part.startswith("blocks["):
            i = int(s.part[len("blocks[") : s.part.index("]")])
            if i not in by_block:
                b = a.blocks[i]
                by_block[i] = {
                    "block": i,
                    "c_in": b.c_in,
                    "c_out": b.c_out,
                    "stride": b.stride,
                    "in_size": s.h,
                    "out_size": math.ceil(s.h / b.stride),
                    "align_op": b.align_op,
                    "layers": list(b.layers),
                    "from_block": b.from_block,
                    "to_block": b.to_block,
                    "mult_adds": 0,
                    "params": 0,
                }
                rows.append(by_block[i])
            by_block[i]["mult_adds"] += m
            by_block[i]["params"] += p
    fixed = {
        s.part: dict(
            zip(("mult_adds", "params"), cost(s)), op=s.op, c_in=s.c_in, c_out=s.c_out, size=s.h
        )
        for s in sites
        if not s.part.startswith("blocks[")
    }
    return {
        "name": a.name,
        "space": a.space,
        "family": a.family,
        "input_size": res,
        "in_channels": a.in_channels,
        "num_classes": classes,
        "mult_adds": total_m,
        "params": total_p,
        "depth": a.depth,
        "stem": fixed["stem"],
        "head": fixed.get("head"),
        "classifier": fixed["classifier"],
        "blocks": rows,
    }


class CostLookup(Protocol):
    def get(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> float: ...


def predict_cost(
    arch: Architecture | Mapping[str, Any] | str,
    lookup: CostLookup | Callable[[str, int, int, int, int, int], float],
    input_size: int | None = None,
    num_classes: int | None = None,
) -> float:
    """Σ over the ops of ``arch`` of ``lookup(op, c_in, c_out, stride, h, w)`` (e.g. latency ms).

    ``lookup`` is a callable or has ``.get(op, c_in, c_out, stride, h, w)`` (a
    :class:`densenas_core.latency.LatencyTable`). A missing entry raises ``KeyError`` naming it.
    """
    a = get_arch(arch)
    fn = lookup.get if hasattr(lookup, "get") else lookup
    return float(
        sum(
            fn(s.op, s.c_in, s.c_out, s.stride, s.h, s.w)
            for s in op_sites(a, input_size, num_classes)
        )
    )

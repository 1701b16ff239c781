"""Derived architectures as versioned documents, and the standalone networks built from them.

The reference DenseNAS prints the derived architecture into a log; here it is a stored record
(:class:`Architecture`, JSON via ``to_dict``/``from_dict``, ``version: 1``) from which
:func:`build_network` builds a plain ``nn.Module`` for retraining and export. Document shape::

    {"version": 1, "name": str|null, "space": str|null, "family": "mbv2"|"resnet"|"custom",
     "input_size": 224, "in_channels": 3, "num_classes": 1000,
     "stem": {"c_out": 16, "stride": 2, "act": "relu6"},
     "blocks": [{"c_in", "c_out", "stride", "align_op", "layers": [op codes, never "skip"],
                 "from_block": int|null, "to_block": int|null}, ...],
     "tail": {"c_in": 384, "c_out": 1984}}

Conventions:

* ``blocks`` run in order; block ``b`` maps ``c_in``→``c_out`` with ``align_op`` at ``stride``
  and then applies ``layers`` (C_out→C_out, stride 1). ``blocks[0].c_in`` is the stem width,
  each block's ``c_in`` is the previous block's ``c_out`` and ``tail.c_in`` the last ``c_out``.
* MBV2 family: the stem's fixed MBConv k3 t1 is the first block (``align_op: "mb_k3_e1"``,
  stride 1, no layers, ``from_block: null, to_block: 0``).
* ``from_block``/``to_block`` are the indices, in ``space``, of the path this block's alignment
  op sits on (the stem is 0); informational, ``null`` where the block is not from a space.
* Tail: a 1×1 conv ``tail.c_in``→``tail.c_out`` + BN + the stem's activation, then global
  average pooling and a linear classifier. The 1×1 conv is present for the ``mbv2`` family
  always (as in the supernet's tail), and for other families only when ``c_in != c_out`` — a
  ResNet ends in pooling + fc after its last block (supplementary Table 1).
* Skip layers are dropped when deriving, so ``depth`` (:func:`arch_summary`) is the number of
  ops in the blocks (alignment ops + basic layers).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import torch
from torch import nn

from .flops import CLASSIFIER_OP, STEM_OP, op_mult_adds, op_params
from .ops import ConvBnAct, OpError, build_op, op_is_valid, parse_op

ARCH_VERSION = 1
FAMILIES = ("mbv2", "resnet", "custom")
ACTS = ("relu6", "relu")


class ArchError(ValueError):
    """An architecture document that cannot be used; the message names the field."""


# -- the document ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StemDoc:
    c_out: int
    stride: int = 2
    act: str = "relu6"


@dataclass(frozen=True)
class BlockDoc:
    c_in: int
    c_out: int
    stride: int
    align_op: str
    layers: tuple[str, ...] = ()
    from_block: int | None = None
    to_block: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class TailDoc:
    c_in: int
    c_out: int


@dataclass(frozen=True)
class Architecture:
    family: str
    stem: StemDoc
    blocks: tuple[BlockDoc, ...]
    tail: TailDoc
    input_size: int = 224
    in_channels: int = 3
    num_classes: int = 1000
    name: str | None = None
    space: str | None = None
    version: int = field(default=ARCH_VERSION)

    def __post_init__(self) -> None:
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))
        _validate(self)

    @property
    def tail_has_conv(self) -> bool:
        return self.family == "mbv2" or self.tail.c_in != self.tail.c_out

    @property
    def depth(self) -> int:
        """Ops in the blocks: one alignment op per block plus its (non-skip) basic layers."""
        return sum(1 + len(b.layers) for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "space": self.space,
            "family": self.family,
            "input_size": self.input_size,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "stem": {"c_out": self.stem.c_out, "stride": self.stem.stride, "act": self.stem.act},
            "blocks": [
                {"c_in": b.c_in, "c_out": b.c_out, "stride": b.stride, "align_op": b.align_op,
                 "layers": list(b.layers), "from_block": b.from_block, "to_block": b.to_block}
                for b in self.blocks
            ],
            "tail": {"c_in": self.tail.c_in, "c_out": self.tail.c_out},
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "Architecture":
        return _from_dict(doc)

    def replace(self, **changes: Any) -> "Architecture":
        return replace(self, **changes)


_TOP_KEYS = {"version", "name", "space", "family", "input_size", "in_channels", "num_classes",
             "stem", "blocks", "tail"}
_BLOCK_KEYS = {"c_in", "c_out", "stride", "align_op", "layers", "from_block", "to_block"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v: Any, where: str) -> int:
    if not _is_int(v) or v <= 0:
        raise ArchError(f"{where}: expected a positive integer, got {v!r}")
    return v


def _opt_index(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if not _is_int(v) or v < 0:
        raise ArchError(f"{where}: expected a block index ≥ 0 or null, got {v!r}")
    return v


def _obj(v: Any, where: str, keys: set[str], required: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ArchError(f"{where}: expected an object")
    unknown = sorted(set(v) - keys)
    if unknown:
        raise ArchError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(keys))})")
    for k in required:
        if k not in v:
            raise ArchError(f"{where}.{k}: field required")
    return v


def _from_dict(doc: Mapping[str, Any]) -> Architecture:
    if not isinstance(doc, Mapping):
        raise ArchError("architecture: expected an object")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ArchError(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(_TOP_KEYS))})")
    for req in ("version", "family", "stem", "blocks", "tail"):
        if req not in doc:
            raise ArchError(f"{req}: field required")
    if doc["version"] != ARCH_VERSION or not _is_int(doc["version"]):
        raise ArchError(f"version: unsupported architecture version {doc['version']!r} "
                        f"(this build reads version {ARCH_VERSION})")
    stem_d = _obj(doc["stem"], "stem", {"c_out", "stride", "act"}, ("c_out",))
    tail_d = _obj(doc["tail"], "tail", {"c_in", "c_out"}, ("c_in", "c_out"))
    raw_blocks = doc["blocks"]
    if not isinstance(raw_blocks, (list, tuple)):
        raise ArchError("blocks: expected a list of block objects")
    blocks = []
    for i, b in enumerate(raw_blocks):
        where = f"blocks[{i}]"
        b = _obj(b, where, _BLOCK_KEYS, ("c_in", "c_out", "stride", "align_op"))
        layers = b.get("layers", [])
        if not isinstance(layers, (list, tuple)):
            raise ArchError(f"{where}.layers: expected a list of op codes")
        blocks.append(BlockDoc(c_in=b["c_in"], c_out=b["c_out"], stride=b["stride"],
                               align_op=b["align_op"], layers=tuple(layers),
                               from_block=b.get("from_block"), to_block=b.get("to_block")))
    return Architecture(
        family=doc["family"],
        stem=StemDoc(c_out=stem_d["c_out"], stride=stem_d.get("stride", 2),
                     act=stem_d.get("act", "relu6")),
        blocks=tuple(blocks),
        tail=TailDoc(c_in=tail_d["c_in"], c_out=tail_d["c_out"]),
        input_size=doc.get("input_size", 224), in_channels=doc.get("in_channels", 3),
        num_classes=doc.get("num_classes", 1000), name=doc.get("name"), space=doc.get("space"),
        version=doc["version"],
    )


def _check_op(code: Any, where: str, c_in: int, c_out: int, stride: int) -> None:
    if not isinstance(code, str):
        raise ArchError(f"{where}: expected an op code string, got {code!r}")
    try:
        parse_op(code)
    except OpError as e:
        raise ArchError(f"{where}: {e}") from None
    if not op_is_valid(code, c_in, c_out, stride):
        raise ArchError(f"{where}: op {code!r} cannot map {c_in}→{c_out} at stride {stride}")


def _validate(a: Architecture) -> None:
    if a.version != ARCH_VERSION:
        raise ArchError(f"version: unsupported architecture version {a.version!r}")
    if a.family not in FAMILIES:
        raise ArchError(f"family: expected one of {', '.join(FAMILIES)}, got {a.family!r}")
    if a.name is not None and not isinstance(a.name, str):
        raise ArchError(f"name: expected a string or null, got {a.name!r}")
    if a.space is not None and not isinstance(a.space, str):
        raise ArchError(f"space: expected a space name or null, got {a.space!r}")
    _pos_int(a.input_size, "input_size")
    _pos_int(a.in_channels, "in_channels")
    _pos_int(a.num_classes, "num_classes")
    _pos_int(a.stem.c_out, "stem.c_out")
    if a.stem.stride not in (1, 2) or not _is_int(a.stem.stride):
        raise ArchError(f"stem.stride: must be 1 or 2, got {a.stem.stride!r}")
    if a.stem.act not in ACTS:
        raise ArchError(f"stem.act: must be one of {', '.join(ACTS)}, got {a.stem.act!r}")
    if not a.blocks:
        raise ArchError("blocks: at least one block is required")
    prev = a.stem.c_out
    for i, b in enumerate(a.blocks):
        where = f"blocks[{i}]"
        if not isinstance(b, BlockDoc):
            raise ArchError(f"{where}: expected a block")
        _pos_int(b.c_in, f"{where}.c_in")
        _pos_int(b.c_out, f"{where}.c_out")
        if b.stride not in (1, 2) or not _is_int(b.stride):
            raise ArchError(f"{where}.stride: must be 1 or 2, got {b.stride!r}")
        if b.c_in != prev:
            src = "stem.c_out" if i == 0 else f"blocks[{i - 1}].c_out"
            raise ArchError(f"{where}.c_in: {b.c_in} does not match {src} = {prev}")
        _check_op(b.align_op, f"{where}.align_op", b.c_in, b.c_out, b.stride)
        for j, code in enumerate(b.layers):
            if code == "skip":
                raise ArchError(f"{where}.layers[{j}]: skip layers are dropped when deriving; "
                                "list only the ops that remain")
            _check_op(code, f"{where}.layers[{j}]", b.c_out, b.c_out, 1)
        _opt_index(b.from_block, f"{where}.from_block")
        _opt_index(b.to_block, f"{where}.to_block")
        prev = b.c_out
    _pos_int(a.tail.c_in, "tail.c_in")
    _pos_int(a.tail.c_out, "tail.c_out")
    if a.tail.c_in != prev:
        raise ArchError(f"tail.c_in: {a.tail.c_in} does not match blocks[-1].c_out = {prev}")


# -- building --------------------------------------------------------------------------------

class ArchBlock(nn.Module):
    """One derived routing block: its alignment op, then its basic layers."""

    def __init__(self, b: BlockDoc, act: str) -> None:
        super().__init__()
        self.align = build_op(b.align_op, b.c_in, b.c_out, b.stride, act=act)
        self.layers = nn.Sequential(*(build_op(c, b.c_out, b.c_out, 1, act=act)
                                      for c in b.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.align(x))


class DenseNASNet(nn.Module):
    """stem → blocks → [1×1 head] → global average pool → classifier.

    Module names are stable (``stem``, ``blocks.{i}.align``, ``blocks.{i}.layers.{j}``,
    ``head``, ``classifier``) so checkpoints and ONNX graphs are readable.
    """

    def __init__(self, arch: Architecture, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.arch = arch
        act = arch.stem.act
        self.stem = ConvBnAct(arch.in_channels, arch.stem.c_out, kernel=3,
                              stride=arch.stem.stride, act=act)
        self.blocks = nn.Sequential(*(ArchBlock(b, act) for b in arch.blocks))
        self.head = (ConvBnAct(arch.tail.c_in, arch.tail.c_out, kernel=1, act=act)
                     if arch.tail_has_conv else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(arch.tail.c_out, arch.num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def build_network(arch: "Architecture | Mapping[str, Any] | str", num_classes: int | None = None,
                  input_size: int | None = None, in_channels: int | None = None, *,
                  dropout: float = 0.0) -> DenseNASNet:
    """A standalone network (BN affine, fresh weights) for ``arch``.

    ``num_classes``/``input_size``/``in_channels`` override the document's values (e.g. a
    DenseNAS-C retrained on Fashion-MNIST: ``in_channels=1, num_classes=10, input_size=28``);
    the network itself accepts any resolution (global pooling), ``input_size`` is recorded on
    ``model.arch`` for summaries.
    """
    a = get_arch(arch)
    changes = {k: v for k, v in (("num_classes", num_classes), ("input_size", input_size),
                                 ("in_channels", in_channels)) if v is not None}
    if changes:
        a = replace(a, **changes)
    return DenseNASNet(a, dropout=dropout)


# -- op signatures, closed-form summaries, predicted cost ------------------------------------

@dataclass(frozen=True)
class OpSite:
    """One op of a built architecture at its real input shape (the key of a cost table)."""

    part: str  # "stem" | "blocks[i].align" | "blocks[i].layers[j]" | "head" | "classifier"
    op: str
    c_in: int
    c_out: int
    stride: int
    h: int
    w: int


def op_sites(arch: Architecture, input_size: int | None = None,
             num_classes: int | None = None) -> list[OpSite]:
    """Every op of ``arch`` in execution order with its input shape.

    The stem is the pseudo-op ``conv3x3``, the classifier ``linear`` (input: the pooled map's
    channels at the last spatial size, output: classes).
    """
    res = input_size or arch.input_size
    classes = num_classes or arch.num_classes
    sites = [OpSite("stem", STEM_OP, arch.in_channels, arch.stem.c_out, arch.stem.stride,
                    res, res)]
    s = math.ceil(res / arch.stem.stride)
    for i, b in enumerate(arch.blocks):
        sites.append(OpSite(f"blocks[{i}].align", b.align_op, b.c_in, b.c_out, b.stride, s, s))
        s = math.ceil(s / b.stride)
        sites.extend(OpSite(f"blocks[{i}].layers[{j}]", code, b.c_out, b.c_out, 1, s, s)
                     for j, code in enumerate(b.layers))
    if arch.tail_has_conv:
        sites.append(OpSite("head", "conv1x1", arch.tail.c_in, arch.tail.c_out, 1, s, s))
    sites.append(OpSite("classifier", CLASSIFIER_OP, arch.tail.c_out, classes, 1, s, s))
    return sites


def arch_summary(arch: "Architecture | Mapping[str, Any] | str", input_size: int | None = None,
                 num_classes: int | None = None) -> dict[str, Any]:
    """Mult-adds, parameters, depth and a per-block table, in closed form (no forward pass).

    Equal to :func:`densenas_core.flops.count_flops_params` on the built network (tested).
    """
    a = get_arch(arch)
    res = input_size or a.input_size
    classes = num_classes or a.num_classes
    sites = op_sites(a, res, classes)

    def cost(s: OpSite) -> tuple[int, int]:
        return (op_mult_adds(s.op, s.c_in, s.c_out, s.stride, s.h),
                op_params(s.op, s.c_in, s.c_out, s.stride))

    rows: list[dict[str, Any]] = []
    by_block: dict[int, dict[str, Any]] = {}
    total_m = total_p = 0
    for s in sites:
        m, p = cost(s)
        total_m += m
        total_p += p
        if s.part.startswith("blocks["):
            i = int(s.part[len("blocks["):s.part.index("]")])
            if i not in by_block:
                b = a.blocks[i]
                by_block[i] = {"block": i, "c_in": b.c_in, "c_out": b.c_out, "stride": b.stride,
                               "in_size": s.h, "out_size": math.ceil(s.h / b.stride),
                               "align_op": b.align_op, "layers": list(b.layers),
                               "from_block": b.from_block, "to_block": b.to_block,
                               "mult_adds": 0, "params": 0}
                rows.append(by_block[i])
            by_block[i]["mult_adds"] += m
            by_block[i]["params"] += p
    fixed = {s.part: dict(zip(("mult_adds", "params"), cost(s)), op=s.op, c_in=s.c_in,
                          c_out=s.c_out, size=s.h)
             for s in sites if not s.part.startswith("blocks[")}
    return {
        "name": a.name, "space": a.space, "family": a.family,
        "input_size": res, "in_channels": a.in_channels, "num_classes": classes,
        "mult_adds": total_m, "params": total_p, "depth": a.depth,
        "stem": fixed["stem"], "head": fixed.get("head"), "classifier": fixed["classifier"],
        "blocks": rows,
    }


class CostLookup(Protocol):
    def get(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> float: ...


def predict_cost(arch: "Architecture | Mapping[str, Any] | str",
                 lookup: "CostLookup | Callable[[str, int, int, int, int, int], float]",
                 input_size: int | None = None, num_classes: int | None = None) -> float:
    """Σ over the ops of ``arch`` of ``lookup(op, c_in, c_out, stride, h, w)`` (e.g. latency ms).

    ``lookup`` is a callable or has ``.get(op, c_in, c_out, stride, h, w)`` (a
    :class:`densenas_core.latency.LatencyTable`). A missing entry raises ``KeyError`` naming it.
    """
    a = get_arch(arch)
    fn = lookup.get if hasattr(lookup, "get") else lookup
    return float(sum(fn(s.op, s.c_in, s.c_out, s.stride, s.h, s.w)
                     for s in op_sites(a, input_size, num_classes)))


# -- relation to a search space ----------------------------------------------------------------

def space_mismatches(arch: Architecture, space: Any) -> list[str]:
    """Ways ``arch`` is not a sub-network of ``space`` (a ``SearchSpace``); empty if it is.

    Checks the stem, that each block with ``from_block``/``to_block`` sits on a path of the space
    with the path's stride and the blocks' widths, that its ops are candidates there and that it
    has no more basic layers than the space block.
    """
    errs: list[str] = []
    if arch.stem.c_out != space.stem.channels or arch.stem.stride != space.stem.stride:
        errs.append(f"stem: {arch.stem.c_out} ch stride {arch.stem.stride} vs space "
                    f"{space.stem.channels} ch stride {space.stem.stride}")
    paths = {(p.src, p.dst): p for p in space.paths}
    for i, b in enumerate(arch.blocks):
        where = f"blocks[{i}]"
        if b.from_block is None:
            if b.to_block == 0 and space.stem.fixed_op == b.align_op:
                continue
            errs.append(f"{where}: no from_block")
            continue
        p = paths.get((b.from_block, b.to_block))
        if p is None:
            errs.append(f"{where}: no path {b.from_block}→{b.to_block} in {space.name}")
            continue
        src, dst = space.blocks[p.src], space.blocks[p.dst]
        if (b.c_in, b.c_out, b.stride) != (src.channels, dst.channels, p.stride):
            errs.append(f"{where}: {b.c_in}→{b.c_out} s{b.stride} vs path "
                        f"{src.channels}→{dst.channels} s{p.stride}")
        if b.align_op not in space.align_ops:
            errs.append(f"{where}.align_op: {b.align_op!r} not a candidate")
        if len(b.layers) > dst.num_layers:
            errs.append(f"{where}.layers: {len(b.layers)} > {dst.num_layers} basic layers")
        errs.extend(f"{where}.layers[{j}]: {c!r} not a candidate"
                    for j, c in enumerate(b.layers) if c not in space.layer_ops)
    last = arch.blocks[-1].to_block
    if last is not None and (last, space.tail.index) not in paths:
        errs.append(f"tail: no path {last}→{space.tail.index} in {space.name}")
    if arch.tail.c_out != space.tail_channels:
        errs.append(f"tail.c_out: {arch.tail.c_out} vs space {space.tail_channels}")
    return errs


def architecture_from_choices(space: Any, block_path: Sequence[int],
                              align_ops: Mapping[tuple[int, int], str],
                              layer_ops: Mapping[int, Sequence[str]], *,
                              num_classes: int, input_size: int | None = None,
                              in_channels: int = 3, name: str | None = None) -> Architecture:
    """The document for one sub-network of ``space`` (what derivation produces).

    ``block_path``: block indices from the stem (0) to the tail inclusive, e.g. Viterbi's output;
    ``align_ops[(i, j)]``: the op chosen on path i→j (every consecutive pair except the one into
    the tail, whose 1×1 conv is fixed); ``layer_ops[j]``: the ops chosen for block j's basic
    layers — ``skip`` entries are dropped here. A fixed stem op becomes the first block.
    """
    path = list(block_path)
    if len(path) < 2 or path[0] != 0 or path[-1] != space.tail.index:
        raise ArchError(f"block_path: must run from 0 to the tail {space.tail.index}, got {path}")
    strides = {(p.src, p.dst): p.stride for p in space.paths}
    blocks: list[BlockDoc] = []
    if space.stem.fixed_op:
        c = space.stem.channels
        blocks.append(BlockDoc(c, c, 1, space.stem.fixed_op, (), None, 0))
    for i, j in zip(path[:-2], path[1:-1]):
        if (i, j) not in strides:
            raise ArchError(f"block_path: {i}→{j} is not a path of {space.name}")
        if (i, j) not in align_ops:
            raise ArchError(f"align_ops: no op chosen for path {i}→{j}")
        layers = tuple(c for c in layer_ops.get(j, ()) if c != "skip")
        blocks.append(BlockDoc(space.blocks[i].channels, space.blocks[j].channels,
                               strides[(i, j)], align_ops[(i, j)], layers, i, j))
    if (path[-2], path[-1]) not in strides:
        raise ArchError(f"block_path: {path[-2]}→{path[-1]} is not a path of {space.name}")
    family = space.family if space.family in FAMILIES else "custom"
    return Architecture(
        family=family, name=name, space=space.name,
        stem=StemDoc(space.stem.channels, space.stem.stride, space.stem.act),
        blocks=tuple(blocks), tail=TailDoc(space.blocks[path[-2]].channels, space.tail_channels),
        input_size=input_size or space.input_size, in_channels=in_channels,
        num_classes=num_classes,
    )


# -- presets ---------------------------------------------------------------------------------

def _mbv2_preset(name: str, rows: Sequence[tuple], tail: int = 1984) -> Architecture:
    blocks = tuple(BlockDoc(c_in, c_out, stride, align, tuple(layers), src, dst)
                   for (c_in, c_out, align, stride, layers, src, dst) in rows)
    return Architecture(family="mbv2", name=name, space="mbv2-imagenet",
                        stem=StemDoc(16, 2, "relu6"), blocks=blocks,
                        tail=TailDoc(blocks[-1].c_out, tail))


def _resnet_preset(name: str, op: str, stages: Sequence[tuple], space: str | None
                   ) -> Architecture:
    """``stages``: (c_out, repeats, stride, from_block, to_block); the first repeat aligns."""
    blocks, c_in = [], 32
    for c_out, n, stride, src, dst in stages:
        blocks.append(BlockDoc(c_in, c_out, stride, op, (op,) * (n - 1), src, dst))
        c_in = c_out
    return Architecture(family="resnet", name=name, space=space, stem=StemDoc(32, 2, "relu"),
                        blocks=tuple(blocks), tail=TailDoc(c_in, c_in))


def _densenas_c() -> Architecture:
    """SPEC §1, as released: 360.8 M mult-adds, 6.13 M params at 224², 1000 classes."""
    k3e3, k3e6, k5e6, k7e3, k7e6 = "mb_k3_e3", "mb_k3_e6", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6"
    return _mbv2_preset("densenas-c", [
        (16, 16, "mb_k3_e1", 1, [], None, 0),
        (16, 24, k3e6, 2, [], 0, 1),
        (24, 48, k7e6, 2, [k3e3], 1, 4),
        (48, 72, "mb_k5_e6", 2, [k3e6, k3e3], 4, 7),
        (72, 128, k3e6, 1, [k3e3, k3e3], 7, 10),
        (128, 160, k3e6, 2, [k7e3, k5e6, k7e3], 10, 11),
        (160, 176, k3e3, 1, [k3e6, k3e6, k3e6], 11, 12),
        (176, 384, k7e6, 1, [], 12, 16),
    ])


# Supplementary Table 1. R1/R2 are paths of the resnet-imagenet space (block indices given);
# R3 is R2's path with bottlenecks of 4× expansion (widths 48…512 are the mid widths), which is
# not a candidate op of that space, so it records no space.
def _densenas_r1() -> Architecture:
    return _resnet_preset("densenas-r1", "basic", [
        (64, 1, 2, 0, 3), (72, 2, 2, 3, 4), (176, 6, 2, 4, 10), (192, 3, 1, 10, 11),
        (288, 1, 2, 11, 17), (512, 1, 1, 17, 20)], "resnet-imagenet")


def _densenas_r2() -> Architecture:
    return _resnet_preset("densenas-r2", "basic", [
        (48, 1, 2, 0, 1), (72, 4, 2, 1, 4), (176, 16, 2, 4, 10), (208, 4, 1, 10, 12),
        (288, 2, 2, 12, 17), (512, 1, 1, 17, 20)], "resnet-imagenet")


def _densenas_r3() -> Architecture:
    return _resnet_preset("densenas-r3", "bottleneck", [
        (192, 1, 2, None, None), (288, 4, 2, None, None), (704, 16, 2, None, None),
        (832, 4, 1, None, None), (1152, 2, 2, None, None), (2048, 1, 1, None, None)], None)


ARCH_PRESETS: dict[str, Architecture] = {
    a.name: a for a in (_densenas_c(), _densenas_r1(), _densenas_r2(), _densenas_r3())
}
ARCH_NAMES: tuple[str, ...] = tuple(ARCH_PRESETS)


def load_arch_file(path: str | Path) -> Architecture:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ArchError(f"{p.name}: invalid JSON ({e})") from None
    return Architecture.from_dict(doc)


def get_arch(spec: "Architecture | Mapping[str, Any] | str | Path") -> Architecture:
    """A preset name, a document dict, a path to a JSON document, or an Architecture."""
    if isinstance(spec, Architecture):
        return spec
    if isinstance(spec, Mapping):
        return Architecture.from_dict(spec)
    if isinstance(spec, str) and spec in ARCH_PRESETS:
        return ARCH_PRESETS[spec]
    if isinstance(spec, (str, Path)) and Path(spec).is_file():
        return load_arch_file(spec)
    raise ArchError(f"architecture: {spec!r} is neither a preset ({', '.join(ARCH_NAMES)}) "
                    "nor a readable JSON file")

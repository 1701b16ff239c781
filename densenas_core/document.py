"""Derived architectures as versioned documents: the record, its validation, and how it
relates to a search space.

The reference DenseNAS prints the derived architecture into a log; here it is a stored record
(:class:`Architecture`, JSON via ``to_dict``/``from_dict``, ``version: 1``) from which
:func:`densenas_core.network.build_network` builds a plain ``nn.Module`` for retraining and
export. Document shape::

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
  ResNet ends in pooling + fc after its last block (docs/algorithm.md §ResNet architectures).
* Skip layers are dropped when deriving, so ``depth``
  (:func:`densenas_core.summary.arch_summary`) is the number of ops in the blocks (alignment
  ops + basic layers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

from .ops import OpError, op_is_valid, parse_op

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
                {
                    "c_in": b.c_in,
                    "c_out": b.c_out,
                    "stride": b.stride,
                    "align_op": b.align_op,
                    "layers": list(b.layers),
                    "from_block": b.from_block,
                    "to_block": b.to_block,
                }
                for b in self.blocks
            ],
            "tail": {"c_in": self.tail.c_in, "c_out": self.tail.c_out},
        }

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Architecture:
        return _from_dict(doc)

    def replace(self, **changes: Any) -> Architecture:
        return replace(self, **changes)


_TOP_KEYS = {
    "version",
    "name",
    "space",
    "family",
    "input_size",
    "in_channels",
    "num_classes",
    "stem",
    "blocks",
    "tail",
}
_BLOCK_KEYS = {"c_in", "c_out", "stride", "align_op", "layers", "from_block", "to_block"}


def _is_int(v: Any) -> TypeGuard[int]:
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
        raise ArchError(
            f"version: unsupported architecture version {doc['version']!r} "
            f"(this build reads version {ARCH_VERSION})"
        )
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
        blocks.append(
            BlockDoc(
                c_in=b["c_in"],
                c_out=b["c_out"],
                stride=b["stride"],
                align_op=b["align_op"],
                layers=tuple(layers),
                from_block=b.get("from_block"),
                to_block=b.get("to_block"),
            )
        )
    return Architecture(
        family=doc["family"],
        stem=StemDoc(
            c_out=stem_d["c_out"], stride=stem_d.get("stride", 2), act=stem_d.get("act", "relu6")
        ),
        blocks=tuple(blocks),
        tail=TailDoc(c_in=tail_d["c_in"], c_out=tail_d["c_out"]),
        input_size=doc.get("input_size", 224),
        in_channels=doc.get("in_channels", 3),
        num_classes=doc.get("num_classes", 1000),
        name=doc.get("name"),
        space=doc.get("space"),
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
                raise ArchError(
                    f"{where}.layers[{j}]: skip layers are dropped when deriving; "
                    "list only the ops that remain"
                )
            _check_op(code, f"{where}.layers[{j}]", b.c_out, b.c_out, 1)
        _opt_index(b.from_block, f"{where}.from_block")
        _opt_index(b.to_block, f"{where}.to_block")
        prev = b.c_out
    _pos_int(a.tail.c_in, "tail.c_in")
    _pos_int(a.tail.c_out, "tail.c_out")
    if a.tail.c_in != prev:
        raise ArchError(f"tail.c_in: {a.tail.c_in} does not match blocks[-1].c_out = {prev}")


# -- relation to a search space ----------------------------------------------------------------


def space_mismatches(arch: Architecture, space: Any) -> list[str]:
    """Ways ``arch`` is not a sub-network of ``space`` (a ``SearchSpace``); empty if it is.

    Checks the stem, that each block with ``from_block``/``to_block`` sits on a path of the space
    with the path's stride and the blocks' widths, that its ops are candidates there and that it
    has no more basic layers than the space block.
    """
    errs: list[str] = []
    if arch.stem.c_out != space.stem.channels or arch.stem.stride != space.stem.stride:
        errs.append(
            f"stem: {arch.stem.c_out} ch stride {arch.stem.stride} vs space "
            f"{space.stem.channels} ch stride {space.stem.stride}"
        )
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
            errs.append(
                f"{where}: {b.c_in}→{b.c_out} s{b.stride} vs path "
                f"{src.channels}→{dst.channels} s{p.stride}"
            )
        if b.align_op not in space.align_ops:
            errs.append(f"{where}.align_op: {b.align_op!r} not a candidate")
        if len(b.layers) > dst.num_layers:
            errs.append(f"{where}.layers: {len(b.layers)} > {dst.num_layers} basic layers")
        errs.extend(
            f"{where}.layers[{j}]: {c!r} not a candidate"
            for j, c in enumerate(b.layers)
            if c not in space.layer_ops
        )
    last = arch.blocks[-1].to_block
    if last is not None and (last, space.tail.index) not in paths:
        errs.append(f"tail: no path {last}→{space.tail.index} in {space.name}")
    if arch.tail.c_out != space.tail_channels:
        errs.append(f"tail.c_out: {arch.tail.c_out} vs space {space.tail_channels}")
    return errs


def architecture_from_choices(
    space: Any,
    block_path: Sequence[int],
    align_ops: Mapping[tuple[int, int], str],
    layer_ops: Mapping[int, Sequence[str]],
    *,
    num_classes: int,
    input_size: int | None = None,
    in_channels: int = 3,
    name: str | None = None,
) -> Architecture:
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
        blocks.append(
            BlockDoc(
                space.blocks[i].channels,
                space.blocks[j].channels,
                strides[(i, j)],
                align_ops[(i, j)],
                layers,
                i,
                j,
            )
        )
    if (path[-2], path[-1]) not in strides:
        raise ArchError(f"block_path: {path[-2]}→{path[-1]} is not a path of {space.name}")
    family = space.family if space.family in FAMILIES else "custom"
    return Architecture(
        family=family,
        name=name,
        space=space.name,
        stem=StemDoc(space.stem.channels, space.stem.stride, space.stem.act),
        blocks=tuple(blocks),
        tail=TailDoc(space.blocks[path[-2]].channels, space.tail_channels),
        input_size=input_size or space.input_size,
        in_channels=in_channels,
        num_classes=num_classes,
    )

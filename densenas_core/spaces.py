"""Dense search spaces as immutable data.

A space is described by stages (a stride and a list of block widths each, plus how many basic
layers every block of the stage has) and is *built* once into a frozen :class:`SearchSpace` that
holds every routing block with its channels, spatial size and stage, and every path of the dense
block DAG with its stride. Nothing here is mutated after construction; presets live in a registry
that tests iterate over, and users bring their own spaces as JSON/YAML validated by
:func:`space_from_dict` with messages that name the offending field.

Connection rule (docs/algorithm.md §Search space): block i feeds the next blocks i+1..i+K but
stops at the first candidate that is past the end, whose stage differs by more than one, or
whose down-sampling ratio is not 1 or 2 (ratio 2 → the path's shape-alignment op has stride 2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path as _FsPath
from typing import Any

from .ops import OpError, parse_op


class SpaceError(ValueError):
    """A search-space description that cannot be built; the message names the field."""


@dataclass(frozen=True)
class StemSpec:
    channels: int
    stride: int
    act: str = "relu6"  # "relu6" (MBV2) | "relu" (ResNet)
    fixed_op: str | None = None  # MBV2: a fixed MBConv k3 t1 C→C after the stem conv


@dataclass(frozen=True)
class StageSpec:
    stride: int
    widths: tuple[int, ...]
    num_layers: int


@dataclass(frozen=True)
class BlockSpec:
    """One node of the block DAG. Index 0 is the stem, the last index is the tail."""

    index: int
    channels: int
    stage: int
    reduction: int  # cumulative down-sampling factor w.r.t. the network input
    num_layers: int

    def size(self, input_size: int) -> int:
        return math.ceil(input_size / self.reduction)


@dataclass(frozen=True)
class PathSpec:
    src: int
    dst: int
    stride: int


@dataclass(frozen=True)
class SearchSpace:
    name: str
    family: str  # "mbv2" | "resnet" | "custom"
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    tail_channels: int
    align_ops: tuple[str, ...]
    layer_ops: tuple[str, ...]
    max_connections: int
    input_size: int = 224  # default resolution; the supernet accepts any
    blocks: tuple[BlockSpec, ...] = field(default=(), compare=False)
    paths: tuple[PathSpec, ...] = field(default=(), compare=False)

    # -- graph views ------------------------------------------------------------------------
    @property
    def tail(self) -> BlockSpec:
        return self.blocks[-1]

    @property
    def routing_blocks(self) -> tuple[BlockSpec, ...]:
        return self.blocks[1:-1]

    @cached_property
    def in_paths(self) -> tuple[tuple[PathSpec, ...], ...]:
        """in_paths[j]: paths entering block j, nearest predecessor first."""
        out: list[list[PathSpec]] = [[] for _ in self.blocks]
        for p in self.paths:
            out[p.dst].append(p)
        return tuple(tuple(sorted(ps, key=lambda p: -p.src)) for ps in out)

    @cached_property
    def out_paths(self) -> tuple[tuple[PathSpec, ...], ...]:
        """out_paths[i]: paths leaving block i in order of destination (the order of β_i)."""
        out: list[list[PathSpec]] = [[] for _ in self.blocks]
        for p in self.paths:
            out[p.src].append(p)
        return tuple(tuple(sorted(ps, key=lambda p: p.dst)) for ps in out)

    @property
    def alignment_branches(self) -> tuple[PathSpec, ...]:
        """Paths with a searchable shape-alignment op (paths into the tail are fixed 1×1 convs)."""
        tail = self.tail.index
        return tuple(p for p in self.paths if p.dst != tail)

    @property
    def num_basic_layers(self) -> int:
        return sum(b.num_layers for b in self.routing_blocks)

    def count_block_paths(self) -> int:
        """Number of distinct stem→tail block sequences (dynamic programming over the DAG)."""
        ways = [0] * len(self.blocks)
        ways[0] = 1
        for j in range(1, len(self.blocks)):
            ways[j] = sum(ways[p.src] for p in self.in_paths[j])
        return ways[-1]

    def summary(self) -> dict[str, int]:
        return {
            "routing_blocks": len(self.routing_blocks),
            "paths": len(self.paths),
            "alignment_branches": len(self.alignment_branches),
            "alignment_ops": len(self.align_ops),
            "basic_layers": self.num_basic_layers,
            "layer_ops": len(self.layer_ops),
            "block_paths": self.count_block_paths(),
        }

    def block_table(self, input_size: int | None = None) -> list[dict[str, Any]]:
        res = input_size or self.input_size
        return [
            {
                "block": b.index,
                "kind": "stem" if b.index == 0 else ("tail" if b is self.tail else "routing"),
                "channels": b.channels,
                "size": b.size(res),
                "stage": b.stage,
                "basic_layers": b.num_layers,
                "inputs": [(p.src, p.stride) for p in self.in_paths[b.index]],
            }
            for b in self.blocks
        ]

    def to_dict(self) -> dict[str, Any]:
        """The description this space was built from (round-trips through space_from_dict)."""
        return {
            "name": self.name,
            "family": self.family,
            "input_size": self.input_size,
            "stem": asdict(self.stem),
            "stages": [
                {"stride": s.stride, "widths": list(s.widths), "num_layers": s.num_layers}
                for s in self.stages
            ],
            "tail_channels": self.tail_channels,
            "align_ops": list(self.align_ops),
            "layer_ops": list(self.layer_ops),
            "max_connections": self.max_connections,
        }


# -- construction ----------------------------------------------------------------------------


def _connect(blocks: tuple[BlockSpec, ...], k: int) -> tuple[PathSpec, ...]:
    paths: list[PathSpec] = []
    for i, src in enumerate(blocks[:-1]):
        for j in range(i + 1, min(i + k, len(blocks) - 1) + 1):
            dst = blocks[j]
            ratio = dst.reduction // src.reduction
            if (
                abs(dst.stage - src.stage) > 1
                or ratio not in (1, 2)
                or dst.reduction % src.reduction
            ):
                break
            paths.append(PathSpec(i, j, ratio))
    return tuple(paths)


def build_space(
    *,
    name: str,
    family: str,
    stem: StemSpec,
    stages: tuple[StageSpec, ...],
    tail_channels: int,
    align_ops: tuple[str, ...],
    layer_ops: tuple[str, ...],
    max_connections: int,
    input_size: int = 224,
) -> SearchSpace:
    """Lay out the blocks of ``stages`` and connect them; validates as it goes."""
    _validate(stem, stages, tail_channels, align_ops, layer_ops, max_connections, input_size)
    blocks = [BlockSpec(0, stem.channels, 0, stem.stride, 0)]
    reduction = stem.stride
    for s_idx, stage in enumerate(stages, start=1):
        reduction *= stage.stride
        for w in stage.widths:
            blocks.append(BlockSpec(len(blocks), w, s_idx, reduction, stage.num_layers))
    blocks.append(BlockSpec(len(blocks), tail_channels, len(stages) + 1, reduction, 0))
    blocks_t = tuple(blocks)
    paths = _connect(blocks_t, max_connections)
    space = SearchSpace(
        name=name,
        family=family,
        stem=stem,
        stages=tuple(stages),
        tail_channels=tail_channels,
        align_ops=tuple(align_ops),
        layer_ops=tuple(layer_ops),
        max_connections=max_connections,
        input_size=input_size,
        blocks=blocks_t,
        paths=paths,
    )
    for b in space.blocks[1:]:
        if not space.in_paths[b.index]:
            raise SpaceError(
                f"stages: block {b.index} ({b.channels} ch, stage {b.stage}) has no input: "
                "consecutive stages may down-sample by at most 2 between connected blocks"
            )
    return space


def _validate(
    stem: StemSpec,
    stages: tuple[StageSpec, ...],
    tail_channels: int,
    align_ops: tuple[str, ...],
    layer_ops: tuple[str, ...],
    k: int,
    input_size: int,
) -> None:
    def pos_int(v: Any, where: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise SpaceError(f"{where}: expected a positive integer, got {v!r}")

    pos_int(stem.channels, "stem.channels")
    if stem.stride not in (1, 2):
        raise SpaceError(f"stem.stride: must be 1 or 2, got {stem.stride!r}")
    if stem.act not in ("relu6", "relu"):
        raise SpaceError(f"stem.act: must be 'relu6' or 'relu', got {stem.act!r}")
    pos_int(tail_channels, "tail_channels")
    pos_int(k, "max_connections")
    pos_int(input_size, "input_size")
    if not stages:
        raise SpaceError("stages: at least one stage is required")
    for i, st in enumerate(stages):
        if st.stride not in (1, 2):
            raise SpaceError(f"stages[{i}].stride: must be 1 or 2, got {st.stride!r}")
        if not st.widths:
            raise SpaceError(f"stages[{i}].widths: at least one block width is required")
        for j, w in enumerate(st.widths):
            pos_int(w, f"stages[{i}].widths[{j}]")
        if not isinstance(st.num_layers, int) or st.num_layers < 0:
            raise SpaceError(
                f"stages[{i}].num_layers: expected an integer ≥ 0, got {st.num_layers!r}"
            )
    for field_name, ops in (("align_ops", align_ops), ("layer_ops", layer_ops)):
        if not ops:
            raise SpaceError(f"{field_name}: at least one op is required")
        if len(set(ops)) != len(ops):
            raise SpaceError(f"{field_name}: duplicate op codes in {list(ops)}")
        for i, code in enumerate(ops):
            try:
                parse_op(code)
            except OpError as e:
                raise SpaceError(f"{field_name}[{i}]: {e}") from None
    if "skip" in align_ops:
        raise SpaceError("align_ops: 'skip' cannot change channels or stride")
    if stem.fixed_op is not None:
        if not isinstance(stem.fixed_op, str):
            raise SpaceError(f"stem.fixed_op: expected an op code or null, got {stem.fixed_op!r}")
        try:
            parse_op(stem.fixed_op)
        except OpError as e:
            raise SpaceError(f"stem.fixed_op: {e}") from None


def space_from_dict(desc: Mapping[str, Any]) -> SearchSpace:
    """Build a space from a JSON/YAML description; errors name the field.

    Stages may be given as a list of ``{"stride", "widths", "num_layers"}`` objects, or as
    parallel lists ``stage_strides`` / ``widths`` (a list of lists) / ``num_layers`` whose
    lengths must agree.
    """
    if not isinstance(desc, Mapping):
        raise SpaceError("space: expected an object")
    known = {
        "name",
        "family",
        "input_size",
        "stem",
        "stages",
        "stage_strides",
        "widths",
        "num_layers",
        "tail_channels",
        "align_ops",
        "layer_ops",
        "max_connections",
    }
    unknown = sorted(set(desc) - known)
    if unknown:
        raise SpaceError(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(known))})")
    for req in ("stem", "tail_channels", "align_ops", "layer_ops"):
        if req not in desc:
            raise SpaceError(f"{req}: field required")
    stem_d = desc["stem"]
    if not isinstance(stem_d, Mapping):
        raise SpaceError("stem: expected an object with channels, stride[, act, fixed_op]")
    try:
        stem = StemSpec(
            channels=stem_d["channels"],
            stride=stem_d.get("stride", 2),
            act=stem_d.get("act", "relu6"),
            fixed_op=stem_d.get("fixed_op"),
        )
    except KeyError as e:
        raise SpaceError(f"stem.{e.args[0]}: field required") from None
    stages = _stages_from_desc(desc)
    for f in ("align_ops", "layer_ops"):
        if not isinstance(desc[f], (list, tuple)) or not all(isinstance(o, str) for o in desc[f]):
            raise SpaceError(f"{f}: expected a list of op codes")
    return build_space(
        name=str(desc.get("name", "custom")),
        family=str(desc.get("family", "custom")),
        stem=stem,
        stages=stages,
        tail_channels=desc["tail_channels"],
        align_ops=tuple(desc["align_ops"]),
        layer_ops=tuple(desc["layer_ops"]),
        max_connections=desc.get("max_connections", 4),
        input_size=desc.get("input_size", 224),
    )


def _stages_from_desc(desc: Mapping[str, Any]) -> tuple[StageSpec, ...]:
    if "stages" in desc:
        if any(k in desc for k in ("stage_strides", "widths", "num_layers")):
            raise SpaceError(
                "stages: give either 'stages' or the parallel lists "
                "'stage_strides'/'widths'/'num_layers', not both"
            )
        raw = desc["stages"]
        if not isinstance(raw, list):
            raise SpaceError("stages: expected a list of {stride, widths, num_layers}")
        out = []
        for i, st in enumerate(raw):
            if not isinstance(st, Mapping):
                raise SpaceError(f"stages[{i}]: expected an object")
            for key in ("stride", "widths", "num_layers"):
                if key not in st:
                    raise SpaceError(f"stages[{i}].{key}: field required")
            if not isinstance(st["widths"], (list, tuple)):
                raise SpaceError(f"stages[{i}].widths: expected a list of integers")
            out.append(StageSpec(st["stride"], tuple(st["widths"]), st["num_layers"]))
        return tuple(out)
    for key in ("stage_strides", "widths", "num_layers"):
        if key not in desc:
            raise SpaceError(f"{key}: field required (or give 'stages')")
    strides, widths, layers = desc["stage_strides"], desc["widths"], desc["num_layers"]
    for key, v in (("stage_strides", strides), ("widths", widths), ("num_layers", layers)):
        if not isinstance(v, list):
            raise SpaceError(f"{key}: expected a list")
    if not (len(strides) == len(widths) == len(layers)):
        raise SpaceError(
            f"widths: {len(widths)} width lists do not match {len(strides)} stage_strides "
            f"and {len(layers)} num_layers entries; give one entry per stage"
        )
    out = []
    for i, (s, w, n) in enumerate(zip(strides, widths, layers)):
        if not isinstance(w, (list, tuple)):
            raise SpaceError(f"widths[{i}]: expected a list of block widths for stage {i}")
        out.append(StageSpec(s, tuple(w), n))
    return tuple(out)


def load_space_file(path: str | _FsPath) -> SearchSpace:
    """Read a JSON or YAML space description."""
    p = _FsPath(path)
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # optional: only for YAML files
        except ImportError as e:  # pragma: no cover
            raise SpaceError("YAML space files need PyYAML installed") from e
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"{p.name}: invalid JSON ({e})") from None
    return space_from_dict(data)


# -- presets ---------------------------------------------------------------------------------

MBV2_ALIGN_OPS = ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6")
MBV2_LAYER_OPS = MBV2_ALIGN_OPS + ("skip",)


def _mbv2_imagenet() -> SearchSpace:
    return build_space(
        name="mbv2-imagenet",
        family="mbv2",
        stem=StemSpec(16, 2, "relu6", fixed_op="mb_k3_e1"),
        stages=(
            StageSpec(2, (24,), 3),
            StageSpec(2, (32, 40, 48), 3),
            StageSpec(2, (56, 64, 72), 3),
            StageSpec(1, (96, 112, 128), 3),
            StageSpec(2, (160, 176, 192), 3),
            StageSpec(1, (320, 352, 384), 0),
        ),
        tail_channels=1984,
        align_ops=MBV2_ALIGN_OPS,
        layer_ops=MBV2_LAYER_OPS,
        max_connections=4,
        input_size=224,
    )


def _mbv2_small() -> SearchSpace:
    """28–32 px inputs: stem stride 1, three down-samplings, narrow widths."""
    return build_space(
        name="mbv2-small",
        family="mbv2",
        stem=StemSpec(16, 1, "relu6", fixed_op="mb_k3_e1"),
        stages=(
            StageSpec(2, (24,), 1),
            StageSpec(2, (32, 40), 2),
            StageSpec(1, (48, 56), 2),
            StageSpec(2, (64, 80), 1),
            StageSpec(1, (96, 112), 0),
        ),
        tail_channels=256,
        align_ops=MBV2_ALIGN_OPS,
        layer_ops=MBV2_LAYER_OPS,
        max_connections=4,
        input_size=32,
    )


def _resnet_imagenet() -> SearchSpace:
    return build_space(
        name="resnet-imagenet",
        family="resnet",
        stem=StemSpec(32, 2, "relu"),
        stages=(
            StageSpec(2, (48, 56, 64), 0),
            StageSpec(2, (72, 96, 112), 5),
            StageSpec(2, (128, 144, 160, 176), 15),
            StageSpec(1, (192, 208, 224), 5),
            StageSpec(2, (240, 256, 272, 288), 5),
            StageSpec(1, (480, 496, 512), 1),
        ),
        tail_channels=512,
        align_ops=("basic",),
        layer_ops=("basic", "skip"),
        max_connections=10,
        input_size=224,
    )


def _resnet_small() -> SearchSpace:
    return build_space(
        name="resnet-small",
        family="resnet",
        stem=StemSpec(16, 1, "relu"),
        stages=(
            StageSpec(2, (24, 32), 1),
            StageSpec(2, (40, 48, 56), 2),
            StageSpec(2, (64, 80), 1),
            StageSpec(1, (96, 128), 0),
        ),
        tail_channels=128,
        align_ops=("basic",),
        layer_ops=("basic", "skip"),
        max_connections=6,
        input_size=32,
    )


_PRESETS = {
    "mbv2-imagenet": _mbv2_imagenet,
    "mbv2-small": _mbv2_small,
    "resnet-imagenet": _resnet_imagenet,
    "resnet-small": _resnet_small,
}
SPACE_NAMES: tuple[str, ...] = tuple(_PRESETS)
_CACHE: dict[str, SearchSpace] = {}


def get_space(name_or_desc: str | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """A preset by name, a description dict, or a space passed through."""
    if isinstance(name_or_desc, SearchSpace):
        return name_or_desc
    if isinstance(name_or_desc, Mapping):
        return space_from_dict(name_or_desc)
    if name_or_desc not in _PRESETS:
        raise SpaceError(
            f"space: unknown preset {name_or_desc!r} (known: {', '.join(SPACE_NAMES)})"
        )
    if name_or_desc not in _CACHE:
        _CACHE[name_or_desc] = _PRESETS[name_or_desc]()
    return _CACHE[name_or_desc]

"""Named architectures (DenseNAS-C, R1–R3) and :func:`get_arch`, which resolves a preset name,
a document, a JSON file or an :class:`~densenas_core.document.Architecture`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .document import ArchError, Architecture, BlockDoc, StemDoc, TailDoc

#: (c_in, c_out, align op, stride, layer ops, from_block, to_block)
_MBRow = tuple[int, int, str, int, Sequence[str], int | None, int | None]
#: (c_out, repeats, stride, from_block, to_block)
_Stage = tuple[int, int, int, int | None, int | None]


def _mbv2_preset(name: str, rows: Sequence[_MBRow], tail: int = 1984) -> Architecture:
    blocks = tuple(
        BlockDoc(c_in, c_out, stride, align, tuple(layers), src, dst)
        for (c_in, c_out, align, stride, layers, src, dst) in rows
    )
    return Architecture(
        family="mbv2",
        name=name,
        space="mbv2-imagenet",
        stem=StemDoc(16, 2, "relu6"),
        blocks=blocks,
        tail=TailDoc(blocks[-1].c_out, tail),
    )


def _resnet_preset(name: str, op: str, stages: Sequence[_Stage], space: str | None) -> Architecture:
    """``stages``: (c_out, repeats, stride, from_block, to_block); the first repeat aligns."""
    blocks: list[BlockDoc] = []
    c_in = 32
    for c_out, n, stride, src, dst in stages:
        blocks.append(BlockDoc(c_in, c_out, stride, op, (op,) * (n - 1), src, dst))
        c_in = c_out
    return Architecture(
        family="resnet",
        name=name,
        space=space,
        stem=StemDoc(32, 2, "relu"),
        blocks=tuple(blocks),
        tail=TailDoc(c_in, c_in),
    )


def _densenas_c() -> Architecture:
    """As released (docs/algorithm.md §DenseNAS-C): 360.8 M mult-adds, 6.13 M params at 224²,
    1000 classes."""
    k3e3, k3e6, k5e6, k7e3, k7e6 = "mb_k3_e3", "mb_k3_e6", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6"
    return _mbv2_preset(
        "densenas-c",
        [
            (16, 16, "mb_k3_e1", 1, [], None, 0),
            (16, 24, k3e6, 2, [], 0, 1),
            (24, 48, k7e6, 2, [k3e3], 1, 4),
            (48, 72, "mb_k5_e6", 2, [k3e6, k3e3], 4, 7),
            (72, 128, k3e6, 1, [k3e3, k3e3], 7, 10),
            (128, 160, k3e6, 2, [k7e3, k5e6, k7e3], 10, 11),
            (160, 176, k3e3, 1, [k3e6, k3e6, k3e6], 11, 12),
            (176, 384, k7e6, 1, [], 12, 16),
        ],
    )


# Supplementary Table 1 (docs/algorithm.md §ResNet architectures). R1/R2 are paths of the
# resnet-imagenet space (block indices given); R3 is R2's path with bottlenecks of 4× expansion
# (widths 48…512 are the mid widths), which is not a candidate op of that space, so it records
# no space.
def _densenas_r1() -> Architecture:
    return _resnet_preset(
        "densenas-r1",
        "basic",
        [
            (64, 1, 2, 0, 3),
            (72, 2, 2, 3, 4),
            (176, 6, 2, 4, 10),
            (192, 3, 1, 10, 11),
            (288, 1, 2, 11, 17),
            (512, 1, 1, 17, 20),
        ],
        "resnet-imagenet",
    )


def _densenas_r2() -> Architecture:
    return _resnet_preset(
        "densenas-r2",
        "basic",
        [
            (48, 1, 2, 0, 1),
            (72, 4, 2, 1, 4),
            (176, 16, 2, 4, 10),
            (208, 4, 1, 10, 12),
            (288, 2, 2, 12, 17),
            (512, 1, 1, 17, 20),
        ],
        "resnet-imagenet",
    )


def _densenas_r3() -> Architecture:
    return _resnet_preset(
        "densenas-r3",
        "bottleneck",
        [
            (192, 1, 2, None, None),
            (288, 4, 2, None, None),
            (704, 16, 2, None, None),
            (832, 4, 1, None, None),
            (1152, 2, 2, None, None),
            (2048, 1, 1, None, None),
        ],
        None,
    )


def _by_name(*archs: Architecture) -> dict[str, Architecture]:
    out: dict[str, Architecture] = {}
    for a in archs:
        assert a.name is not None  # every preset is built with its name
        out[a.name] = a
    return out


ARCH_PRESETS: dict[str, Architecture] = _by_name(
    _densenas_c(), _densenas_r1(), _densenas_r2(), _densenas_r3()
)
ARCH_NAMES: tuple[str, ...] = tuple(ARCH_PRESETS)


def load_arch_file(path: str | Path) -> Architecture:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ArchError(f"{p.name}: invalid JSON ({e})") from None
    return Architecture.from_dict(doc)


def get_arch(spec: Architecture | Mapping[str, Any] | str | Path) -> Architecture:
    """A preset name, a document dict, a path to a JSON document, or an Architecture."""
    if isinstance(spec, Architecture):
        return spec
    if isinstance(spec, Mapping):
        return Architecture.from_dict(spec)
    if isinstance(spec, str) and spec in ARCH_PRESETS:
        return ARCH_PRESETS[spec]
    if isinstance(spec, (str, Path)) and Path(spec).is_file():
        return load_arch_file(spec)
    raise ArchError(
        f"architecture: {spec!r} is neither a preset ({', '.join(ARCH_NAMES)}) "
        "nor a readable JSON file"
    )

"""Derived architectures: the names everyone imports, from the four modules that hold them.

* :mod:`densenas_core.document` — the versioned document (:class:`Architecture`), its
  validation, and its relation to a search space (:func:`architecture_from_choices`,
  :func:`space_mismatches`);
* :mod:`densenas_core.presets` — DenseNAS-C, R1–R3 and :func:`get_arch`;
* :mod:`densenas_core.network` — the standalone ``nn.Module`` (:func:`build_network`);
* :mod:`densenas_core.summary` — ops at their shapes, closed-form summary, predicted cost.

Dependencies run one way: ops ← document ← presets ← network ← flops ← summary (flops builds a
network to count it; summary uses flops' closed forms). No module of the core imports this one;
it is the stable import path for everything outside the core.
"""

from __future__ import annotations

from .document import (
    ACTS,
    ARCH_VERSION,
    FAMILIES,
    ArchError,
    Architecture,
    BlockDoc,
    StemDoc,
    TailDoc,
    architecture_from_choices,
    space_mismatches,
)
from .network import ArchBlock, DenseNASNet, build_network
from .presets import ARCH_NAMES, ARCH_PRESETS, get_arch, load_arch_file
from .summary import CostLookup, OpSite, arch_summary, op_sites, predict_cost

__all__ = [
    "ACTS",
    "ARCH_NAMES",
    "ARCH_PRESETS",
    "ARCH_VERSION",
    "ArchBlock",
    "ArchError",
    "Architecture",
    "BlockDoc",
    "CostLookup",
    "DenseNASNet",
    "FAMILIES",
    "OpSite",
    "StemDoc",
    "TailDoc",
    "arch_summary",
    "architecture_from_choices",
    "build_network",
    "get_arch",
    "load_arch_file",
    "op_sites",
    "predict_cost",
    "space_mismatches",
]

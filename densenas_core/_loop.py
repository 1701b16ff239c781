"""Loop plumbing shared by the search and retrain loops: seeded batching, lr, snapshots,
event stamps, checkpoint checks."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .reporting import Reporter

#: event slot inside one global step: ``seq = 4·global_step + SLOT[type]``
SLOT = {"step": 0, "epoch": 1, "arch": 2, "log": 3}


def step_emitter(reporter: Reporter, st: Mapping[str, Any]) -> Callable[..., None]:
    """``emit(kind, **data)``: report an event stamped with the loop's current ``global_step``
    (read from ``st`` at each call) and its ``seq`` in the job's event order."""

    def emit(kind: str, **data: Any) -> None:
        data["global_step"] = st["global_step"]
        data["seq"] = 4 * st["global_step"] + SLOT[kind]
        reporter.report(kind, **data)

    return emit


def check_checkpoint(rs: Mapping[str, Any], kind: str, version: int) -> None:
    """Refuse a resume state that is not a ``kind`` checkpoint of ``version``."""
    if rs.get("version") != version or rs.get("kind") != kind:
        raise ValueError(f"resume_state: not a {kind} checkpoint of this version")


def cosine_lr(step: int, total: int, lr: float, lr_min: float) -> float:
    """lr of weight step ``step`` (0-based) of ``total``: cosine from lr to lr_min."""
    if total <= 1:
        return lr
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * step / (total - 1)))


def mix_seed(seed: int, *salt: int) -> int:
    h = seed & 0xFFFFFFFF
    for s in salt:
        h = (h * 1_000_003 + s + 0x9E3779B9) % (1 << 62)
    return h


def num_batches(n: int, bs: int) -> int:
    """Batches per pass: full batches only (drop last), at least one when there is data."""
    return max(1, n // bs) if n else 0


def epoch_batches(n: int, bs: int, gen_seed: int, rank: int, world: int) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(gen_seed))
    shard = perm[rank::world][: n // world] if world > 1 else perm
    nb = num_batches(len(shard), bs)
    size = bs if len(shard) >= bs else len(shard)
    return [shard[i * size : (i + 1) * size] for i in range(nb)]


def snapshot(obj: Any) -> Any:
    """A deep copy with every tensor cloned onto the CPU (safe to keep while training goes on)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


def rng_state(device: torch.device) -> dict[str, Any]:
    st = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def warmup_cosine_lr(step: int, total: int, lr: float, lr_min: float, warmup: int) -> float:
    """lr of weight step ``step``: linear from lr/warmup up to lr over the first ``warmup``
    steps, then :func:`cosine_lr` over the rest."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    return cosine_lr(step - warmup, total - warmup, lr, lr_min)

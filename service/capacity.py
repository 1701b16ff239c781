"""What a job holds on the cluster while it runs, and which queued jobs fit now.

The dispatcher claims a job only when the cluster's total resources, less what the running jobs
hold, cover it — in priority order, stopping at the first job that does not fit, so a big
high-priority job is not starved by small ones behind it and no job waits inside Ray's
placement-group queue, where the database's priority order would be lost. The running jobs'
demand comes from their specs (deterministic, no race with Ray's resource view right after a
start); placement groups that outlive their attempt are removed by the executor's sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.payload import job_resources

#: CPUs one Train worker (and a profile task) reserves: workers.executors' ``cpus_per_worker``.
CPUS_PER_WORKER = 1.0


@dataclass(frozen=True)
class Demand:
    cpus: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.cpus + other.cpus, self.gpus + other.gpus)

    def fits(self, free: Demand) -> bool:
        return self.cpus <= free.cpus + 1e-9 and self.gpus <= free.gpus + 1e-9


def demand(kind: str, spec: Mapping[str, Any]) -> Demand:
    """The resources a job of ``kind`` with the stored ``spec`` reserves while it runs (a
    profile: one task on the device class it measures)."""
    if kind == "sweep":  # max_concurrent trials at once, each a search
        from .sweeps import apply_config, grid_points

        points = grid_points(spec.get("grid") or {}) or [{}]
        each = [demand("search", apply_config(spec.get("search") or {}, p)) for p in points]
        n = min(int(spec.get("max_concurrent") or 1), len(each))
        top = sorted(each, key=lambda d: (d.gpus, d.cpus), reverse=True)[:n]
        return sum(top, Demand())
    want = job_resources(kind, spec)
    return Demand(want.num_workers * CPUS_PER_WORKER, want.num_workers * want.gpus_per_worker)


def free_resources(total: Mapping[str, float], running: Iterable[Demand]) -> Demand:
    """The cluster's ``total`` (Ray's resource names) less what ``running`` jobs hold."""
    held = sum(running, Demand())
    return Demand(
        float(total.get("CPU", 0.0)) - held.cpus, float(total.get("GPU", 0.0)) - held.gpus
    )


def plan_claims(candidates: Iterable[tuple[int, Demand]], free: Demand, limit: int) -> list[int]:
    """Ids to claim from ``candidates`` (in claim order): each while it fits what is left,
    stopping at the first that does not (strict priority)."""
    out: list[int] = []
    for job_id, need in candidates:
        if len(out) >= limit or not need.fits(free):
            break
        out.append(job_id)
        free = Demand(free.cpus - need.cpus, free.gpus - need.gpus)
    return out

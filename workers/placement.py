"""Where a job's Train workers go, and how every placement group a job created is found again.

Two problems with Ray Train's own placement groups, both measured on this service:

* **Leaks.** A placement group is fate-shared with the *Ray job* of its creator. The Train
  controller is an actor of the control plane's long-lived driver job, so when the controller
  dies ungracefully (kill -9, the memory monitor, a cancel that kills the job actor while the
  group still waits for resources) the group and its reserved CPUs outlive it until the control
  plane itself exits. Ray Train's ``PlacementGroupCleaner`` only helps where the state API
  (the dashboard) runs and only registers groups that already started.
* **Inexact placement.** ``num_nodes × workers_per_node`` has no Ray strategy: STRICT_SPREAD
  allows one bundle per node and SPREAD is best effort.

So every group a job's controller creates is **named** ``densenas-job-<id>-a<attempt>-<n>``
(:class:`NamePlacementGroups`, a Train callback that runs in the controller), and whoever sees
an attempt end — the job actor itself, or the dispatcher's periodic sweep when the job actor is
gone too — removes the groups by name (:func:`remove_job_groups`, :func:`stale_groups`). And a
``workers_per_node > 1`` retrain pins its bundles to chosen nodes with per-bundle label
selectors (:func:`plan_nodes`).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

PG_PREFIX = "densenas-job-"
_PG_NAME = re.compile(r"^densenas-job-(\d+)-a(\d+)-\d+$")
NODE_ID_LABEL = "ray.io/node-id"  # ray._raylet.RAY_NODE_ID_KEY: every node carries it


def group_name(job_id: int, attempt: int, n: int) -> str:
    return f"{PG_PREFIX}{int(job_id)}-a{int(attempt)}-{int(n)}"


def parse_group_name(name: str | None) -> tuple[int, int] | None:
    """``(job id, attempt)`` of a group this service named, else None."""
    m = _PG_NAME.match(name or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- naming, inside the Train controller --------------------------------------------------------


def _named(create: Callable[..., Any], job_id: int, attempt: int) -> Callable[..., Any]:
    counter = itertools.count(1)

    def placement_group(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("name"):
            kwargs["name"] = group_name(job_id, attempt, next(counter))
        return create(*args, **kwargs)

    placement_group.__densenas_named__ = (job_id, attempt)  # type: ignore[attr-defined]
    return placement_group


def _worker_group_callback_base() -> type:
    try:
        from ray.train.v2._internal.execution.callback import WorkerGroupCallback
    except ImportError:  # pragma: no cover - a Ray Train without the V2 callback API
        return object
    return WorkerGroupCallback


class NamePlacementGroups(_worker_group_callback_base()):  # type: ignore[misc]
    """Train callback: the groups this run's controller creates get this job's names.

    The controller process runs one Train run, so wrapping the ``placement_group`` function its
    worker-group module calls is confined to this job. A Ray whose internals moved is logged,
    not fatal: the groups are then unnamed and only Ray's own cleanup applies.
    """

    def __init__(self, job_id: int, attempt: int) -> None:
        self.job_id = int(job_id)
        self.attempt = int(attempt)

    def before_worker_group_start(self, worker_group_context: Any) -> None:
        try:
            from ray.train.v2._internal.execution.worker_group import worker_group as module
        except ImportError:  # pragma: no cover
            logger.warning("ray train internals moved: placement groups stay unnamed")
            return
        current = getattr(module, "placement_group", None)
        if current is None:  # pragma: no cover
            logger.warning("ray train internals moved: placement groups stay unnamed")
            return
        if getattr(current, "__densenas_named__", None) == (self.job_id, self.attempt):
            return
        original = getattr(current, "__wrapped__", current)
        wrapper = _named(original, self.job_id, self.attempt)
        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        module.placement_group = wrapper


# -- finding and removing, from any driver (job actor, dispatcher) --------------------------------


@dataclass(frozen=True)
class JobGroup:
    """A live (not removed) placement group this service named."""

    id: str
    name: str
    job_id: int
    attempt: int
    state: str
    cpus: float


def job_groups(table: Mapping[str, Mapping[str, Any]]) -> list[JobGroup]:
    """The service's groups in ``ray.util.placement_group_table()``, removed ones left out."""
    out = []
    for pg_id, row in table.items():
        parsed = parse_group_name(row.get("name"))
        state = str(row.get("state", ""))
        if parsed is None or state == "REMOVED":
            continue
        bundles = row.get("bundles") or {}
        cpus = sum(float(b.get("CPU", 0.0)) for b in bundles.values())
        out.append(
            JobGroup(
                str(row.get("placement_group_id", pg_id)),
                str(row["name"]),
                parsed[0],
                parsed[1],
                state,
                cpus,
            )
        )
    return out


def stale_groups(groups: Iterable[JobGroup], running: Mapping[int, int]) -> list[JobGroup]:
    """Groups no running attempt owns: ``running`` maps each running job to its attempt."""
    return [g for g in groups if running.get(g.job_id) != g.attempt]


def _ray_table() -> dict[str, Any]:
    from ray.util.placement_group import placement_group_table

    return placement_group_table()


def remove_groups(groups: Iterable[JobGroup]) -> int:
    """Remove ``groups``; one that is already gone is not an error. Returns how many."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    for g in groups:
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(g.id))))
            removed += 1
            logger.info(
                "removed placement group %s (job %s attempt %s, %s, %g CPU)",
                g.name,
                g.job_id,
                g.attempt,
                g.state,
                g.cpus,
            )
        except Exception as exc:  # noqa: BLE001 - removed meanwhile, or GCS hiccup: next sweep
            logger.warning("could not remove placement group %s: %s", g.name, exc)
    return removed


def remove_job_groups(job_id: int, attempt: int | None = None) -> int:
    """Remove the live groups of ``job_id`` (of one attempt, when given)."""
    groups = [
        g
        for g in job_groups(_ray_table())
        if g.job_id == int(job_id) and (attempt is None or g.attempt == int(attempt))
    ]
    return remove_groups(groups)


# -- exact per-node placement ---------------------------------------------------------------------


class PlacementError(ValueError):
    """The cluster has no set of nodes that can hold the requested layout."""


def plan_nodes(
    nodes: Iterable[Mapping[str, Any]],
    num_nodes: int,
    per_node: int,
    per_worker: Mapping[str, float],
    available: Mapping[str, Mapping[str, float]] | None = None,
) -> list[str]:
    """Choose ``num_nodes`` alive nodes that each hold ``per_node`` workers of ``per_worker``
    resources (by total capacity; ``available`` per node id, when known, ranks the ones with
    the most free room first so the group starts now rather than waits). Returns the node ids,
    one per node, in order; raises :class:`PlacementError` naming the shortfall."""
    need = {k: float(v) * per_node for k, v in per_worker.items() if float(v) > 0}
    fit = []
    for node in nodes:
        if not node.get("Alive", node.get("alive", False)):
            continue
        total = node.get("Resources") or {}
        if all(float(total.get(k, 0.0)) >= v for k, v in need.items()):
            fit.append(str(node.get("NodeID")))
    if len(fit) < num_nodes:
        raise PlacementError(
            f"num_nodes × workers_per_node: {num_nodes} nodes with room for {per_node} "
            f"workers of {dict(per_worker)} each are needed; the cluster has {len(fit)}"
        )
    free = available or {}

    def room(node_id: str) -> float:  # how many times over the node holds its share now
        have = free.get(node_id)
        if have is None:
            return 0.0
        return min((float(have.get(k, 0.0)) / v for k, v in need.items()), default=0.0)

    fit.sort(key=lambda n: (-min(room(n), 1.0), n))
    return fit[:num_nodes]


def bundle_selectors(node_ids: list[str], per_node: int) -> list[dict[str, str]]:
    """One label selector per Train worker: ``per_node`` consecutive ranks on each node."""
    return [{NODE_ID_LABEL: node} for node in node_ids for _ in range(per_node)]


def node_layout_error(node_ids: Iterable[str], num_nodes: int, per_node: int) -> str | None:
    """What is wrong with where the ranks ran (their node ids), or None when exact."""
    counts: dict[str, int] = {}
    for node in node_ids:
        counts[node] = counts.get(node, 0) + 1
    if len(counts) == num_nodes and all(c == per_node for c in counts.values()):
        return None
    layout = ", ".join(f"{n[:12]}×{c}" for n, c in sorted(counts.items()))
    return (
        f"placement: asked for {num_nodes} nodes × {per_node} workers, the ranks ran on "
        f"{len(counts)} node(s): {layout}"
    )

"""Queries over stored architectures: filters, predicted latency (cached), the Pareto front.

Predicted latency is the sum of a latency table's per-op medians over the architecture's ops
(``densenas_core.arch.predict_cost``). It is computed on first need and cached in the row's
``predicted_latency`` JSON under the table id (``null`` when the table lacks one of its ops), so
filtering by ``max_latency_ms`` costs a table parse once per (architecture, table) pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import core
from .auth import Principal
from .errors import Invalid, NotFound
from .models import Architecture, Job, LatencyTable
from .pagination import Cursor
from .schemas import ArchitectureDetail, ArchitecturePublic, RetrainRef

PARETO_AXES = {
    "latency,accuracy": "latency",
    "accuracy,latency": "latency",
    "mult_adds,accuracy": "mult_adds",
    "accuracy,mult_adds": "mult_adds",
}


@dataclass(frozen=True)
class ArchFilters:
    space: str | None = None
    max_mult_adds: float | None = None
    max_latency_ms: float | None = None
    latency_table_id: int | None = None
    min_accuracy: float | None = None
    pareto: str | None = None


def visible_arch(session: Session, principal: Principal, arch_id: int) -> Architecture:
    arch = session.get(Architecture, arch_id)
    if arch is None or not principal.can_see(arch.project):
        raise NotFound(f"architecture {arch_id} not found")
    return arch


def visible_table(
    session: Session, principal: Principal, table_id: int, where: str | None = None
) -> LatencyTable:
    table = session.get(LatencyTable, table_id)
    if table is None or not principal.can_see(table.project):
        if where is not None:
            raise Invalid.field(where, f"latency table {table_id} not found")
        raise NotFound(f"latency table {table_id} not found")
    return table


def predicted_ms(session: Session, arch: Architecture, table: LatencyTable) -> float | None:
    """Predicted latency of ``arch`` on ``table`` (cached on the row; caller commits)."""
    key = str(table.id)
    cache = arch.predicted_latency or {}
    if key in cache:
        return cache[key]
    ms = core.predict_latency_ms(arch.doc, table.doc)
    arch.predicted_latency = {**cache, key: ms}  # a new dict: JSON columns track assignment
    return ms


def public(arch: Architecture) -> ArchitecturePublic:
    fields = {name: getattr(arch, name) for name in ArchitecturePublic.model_fields}
    fields["predicted_latency"] = {
        k: v for k, v in (arch.predicted_latency or {}).items() if v is not None
    }  # None caches "cannot predict"
    fields["measured_latency"] = arch.measured_latency or {}
    return ArchitecturePublic.model_validate(fields)


def list_architectures(
    session: Session, principal: Principal, f: ArchFilters, *, limit: int, cursor: str | None
) -> tuple[list[ArchitecturePublic], str | None]:
    axis = None
    if f.pareto is not None:
        axis = PARETO_AXES.get(f.pareto.replace(" ", ""))
        if axis is None:
            raise Invalid.field("pareto", "one of latency,accuracy or mult_adds,accuracy")
    needs_latency = f.max_latency_ms is not None or axis == "latency"
    table = None
    if needs_latency:
        if f.latency_table_id is None:
            raise Invalid.field("latency_table_id", "needed to filter or rank by latency")
        table = visible_table(session, principal, f.latency_table_id, "latency_table_id")
    elif f.latency_table_id is not None:
        table = visible_table(session, principal, f.latency_table_id, "latency_table_id")

    q = select(Architecture)
    if not principal.is_admin:
        q = q.where(Architecture.project == principal.project)
    if f.space is not None:
        q = q.where(Architecture.space == f.space)
    if f.max_mult_adds is not None:
        q = q.where(Architecture.mult_adds <= f.max_mult_adds)
    if f.min_accuracy is not None:
        q = q.where(Architecture.accuracy_top1 >= f.min_accuracy)
    if axis is not None:
        q = q.where(Architecture.accuracy_top1.is_not(None))
    if cursor and axis is None:
        c = Cursor.decode(cursor, "-id", int)
        q = q.where(Architecture.id < c.id)
    q = q.order_by(Architecture.id.desc())

    if table is None and axis is None:  # everything filtered in SQL: a plain keyset page
        rows = list(session.scalars(q.limit(limit + 1)))
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = Cursor("-id", rows[-1].id, rows[-1].id).encode()
        return [public(a) for a in rows], nxt

    rows = list(session.scalars(q))
    cost: dict[int, float] = {}
    if table is not None:
        kept = []
        for a in rows:
            ms = predicted_ms(session, a, table)
            if ms is None:
                if needs_latency:
                    continue
            else:
                if f.max_latency_ms is not None and ms > f.max_latency_ms:
                    continue
                cost[a.id] = ms
            kept.append(a)
        rows = kept
        session.commit()  # keep the cache
    if axis is not None:
        if axis == "mult_adds":
            cost = {a.id: float(a.mult_adds) for a in rows if a.mult_adds is not None}
            rows = [a for a in rows if a.id in cost]
        # (accuracy_top1 is never None here: filtered in SQL)
        front = pareto_front(
            [(cost[a.id], a.accuracy_top1, a) for a in rows if a.accuracy_top1 is not None]
        )
        return [public(a) for a in front], None
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = Cursor("-id", rows[-1].id, rows[-1].id).encode()
    return [public(a) for a in rows], nxt


def pareto_front(points: Sequence[tuple[float, float, Any]]) -> list[Any]:
    """Items not dominated in (lower cost, higher accuracy), cheapest first.

    Sort by cost (ties: better accuracy first) and sweep: an item is on the front iff its
    accuracy beats every cheaper item's — or it ties exactly with the last front point.
    """
    front: list[Any] = []
    best: tuple[float, float] | None = None
    for c, acc, item in sorted(points, key=lambda p: (p[0], -p[1])):
        if best is None or acc > best[1] or (c, acc) == best:
            front.append(item)
            best = (c, acc)
    return front


def detail(session: Session, principal: Principal, arch: Architecture) -> ArchitectureDetail:
    q = select(LatencyTable).order_by(LatencyTable.id)
    if not principal.is_admin:
        q = q.where(LatencyTable.project == principal.project)
    tables = session.scalars(q).all()
    before = dict(arch.predicted_latency or {})
    for t in tables:
        predicted_ms(session, arch, t)
    if arch.predicted_latency != before:
        session.commit()
    retrains = session.scalars(
        select(Job).where(Job.kind == "retrain", Job.architecture_id == arch.id).order_by(Job.id)
    ).all()
    refs = []
    for j in retrains:
        if not principal.can_see(j.project):
            continue
        metrics = (j.result or {}).get("metrics") or {}
        refs.append(
            RetrainRef(
                job_id=j.id,
                status=j.status,
                top1=_num(metrics.get("top1")),
                top5=_num(metrics.get("top5")),
            )
        )
    base = public(arch).model_dump()
    return ArchitectureDetail(
        **base, doc=arch.doc, has_arch_params=bool(arch.arch_params), retrains=refs
    )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def derive_from_search(
    session: Session, principal: Principal, job_id: int, cost: Any, name: str | None
) -> Architecture:
    """A new architecture re-derived from a succeeded search's α/β under ``cost``'s budget."""
    job, source = _derivation_source(session, principal, job_id)
    found = _derive(session, principal, job, source, cost, name or _budget_label(job_id, cost))
    [arch] = _store(session, job, source, [(cost, found)])
    session.commit()
    return arch


def derive_family_from_search(
    session: Session, principal: Principal, job_id: int, budgets: Sequence[Any], name: str | None
) -> list[Architecture]:
    """One architecture per budget (request order), derived from one succeeded search and stored
    in one transaction: a budget that fails is the request's 422 (naming ``budgets[i]``) and
    nothing is stored. Equal budgets are derived once and answer with the same architecture."""
    job, source = _derivation_source(session, principal, job_id)
    prefix = name or f"search-{job_id}"
    derived: dict[str, tuple[Any, _Derived]] = {}
    order = []
    for i, cost in enumerate(budgets):
        key = cost.model_dump_json()
        if key not in derived:
            label = f"{prefix}-{_budget_suffix(cost)}"
            derived[key] = (cost, _derive(session, principal, job, source, cost, label, i))
        order.append(key)
    stored = dict(zip(derived, _store(session, job, source, list(derived.values()))))
    session.commit()
    return [stored[k] for k in order]


@dataclass(frozen=True)
class _Derived:
    label: str
    doc: dict[str, Any]
    report: dict[str, Any]
    table_id: int | None


def _derivation_source(
    session: Session, principal: Principal, job_id: int
) -> tuple[Job, Architecture]:
    """The succeeded search ``job_id`` and its stored architecture with α/β (404/409/422)."""
    from . import jobs
    from .errors import Conflict

    job = jobs.visible_job(session, principal, job_id)
    if job.kind != "search":
        raise Invalid.field("job", f"job {job_id} is a {job.kind} job; only searches derive")
    if job.status != jobs.JobStatus.SUCCEEDED:
        raise Conflict(
            f"job {job_id} is {job.status}; derive needs a succeeded search",
            current_state=job.status,
        )
    source_id = (job.result or {}).get("architecture_id")
    source = session.get(Architecture, source_id) if source_id else None
    if source is None or not source.arch_params:
        raise Invalid.field("job", f"search {job_id} stored no α/β (arch_params) to derive from")
    return job, source


def _budget_suffix(cost: Any) -> str:
    return (f"{cost.max_mult_adds}madds" if cost.max_mult_adds else "") + (
        f"{cost.max_latency_ms:g}ms" if cost.max_latency_ms else ""
    )


def _budget_label(job_id: int, cost: Any) -> str:
    return f"search-{job_id}-{_budget_suffix(cost)}"


def _derive(
    session: Session,
    principal: Principal,
    job: Job,
    source: Architecture,
    cost: Any,
    label: str,
    index: int | None = None,
) -> _Derived:
    """Derive under one budget (no writes); a 422 names ``cost`` or ``budgets[index]``."""
    from .derive import derive_within_budget

    where = "cost" if index is None else f"budgets[{index}]"
    if cost.max_mult_adds is None and cost.max_latency_ms is None:
        raise Invalid.field(where, "give max_mult_adds and/or max_latency_ms")
    table = None
    if cost.latency_table_id is not None:
        table = visible_table(
            session, principal, cost.latency_table_id, f"{where}.latency_table_id"
        )
    doc, report = derive_within_budget(
        job.spec.get("space"),
        source.arch_params or {},  # never empty: _derivation_source checked
        source.doc,
        max_mult_adds=cost.max_mult_adds,
        max_latency_ms=cost.max_latency_ms,
        table_doc=table.doc if table is not None else None,
        top_k=cost.top_k,
        name=label,
        where=where,
    )
    return _Derived(label, doc, report, table.id if table is not None else None)


def _store(
    session: Session, job: Job, source: Architecture, found: Sequence[tuple[Any, _Derived]]
) -> list[Architecture]:
    """Add each derivation's architecture and its job's ``derived`` event (caller commits)."""
    from .models import JobEvent, utcnow

    now = utcnow()
    out = []
    for cost, d in found:
        arch = Architecture(
            project=job.project,
            job_id=job.id,
            name=d.label[:200],
            space=source.space,
            doc=d.doc,
            mult_adds=d.report["mult_adds"],
            params=d.report["params"],
            arch_params=None,
            predicted_latency=(
                {str(d.table_id): d.report["latency_ms"]} if d.table_id is not None else {}
            ),
            measured_latency={},
            derived_from=source.id,
            created_at=now,
        )
        session.add(arch)
        session.flush()
        session.add(
            JobEvent(
                job_id=job.id,
                type="derived",
                created_at=now,
                data={
                    "architecture_id": arch.id,
                    "cost": cost.model_dump(mode="json"),
                    **{k: d.report[k] for k in ("rank", "mult_adds", "latency_ms", "blocks")},
                },
            )
        )
        out.append(arch)
    return out

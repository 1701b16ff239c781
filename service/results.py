"""What a successful attempt leaves behind, by job kind (the ``complete`` result contract in
docs/DESIGN.md): a search stores its derived architecture (with the α/β it came from, so it can
be re-derived later), a retrain records accuracy on the architecture it trained, a profile
stores its latency table. Runs inside the completing transaction: a result that cannot be
stored leaves the job running and the worker gets a 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from . import core, sweeps
from .errors import validation_problem
from .models import Architecture, Job, LatencyTable
from .schemas import ProfileResultIn, RetrainResultIn, SearchResultIn

_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], result: Mapping[str, Any]) -> _M:
    try:
        return model.model_validate(result)
    except ValidationError as e:
        errs = [dict(x, loc=("result",) + tuple(x["loc"])) for x in e.errors()]
        raise validation_problem(errs) from None


def ingest(session: Session, job: Job, result: Mapping[str, Any], now: datetime) -> dict:
    """Store what ``job`` produced → the value for ``job.result``."""
    if job.kind == "search":
        return _search(session, job, _parse(SearchResultIn, result), now)
    if job.kind == "retrain":
        return _retrain(session, job, _parse(RetrainResultIn, result))
    if job.kind == "sweep":  # its trials stored their own results: the sweep's is their summary
        return sweeps.summary(session, job)
    return _profile(session, job, _parse(ProfileResultIn, result), now)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def normalise_measured(measured: Mapping[str, Any] | None) -> dict[str, float]:
    """``{device: ms}`` from either that shape or one ``measure_network_latency`` record."""
    if not measured:
        return {}
    if "device_name" in measured:
        ms = next(
            (
                _number(measured.get(k))
                for k in ("median_ms", "mean_ms", "ms")
                if _number(measured.get(k)) is not None
            ),
            None,
        )
        return {str(measured["device_name"]): ms} if ms is not None else {}
    return {str(k): float(v) for k, v in measured.items() if _number(v) is not None}


def _search(session: Session, job: Job, res: SearchResultIn, now: datetime) -> dict:
    doc = res.architecture
    core.check_architecture(doc, "result.architecture")
    mult_adds, params = core.arch_figures(doc)
    spec_space = job.spec.get("space")
    space = (
        doc.get("space")
        if isinstance(doc.get("space"), str)
        else (spec_space if isinstance(spec_space, str) else (spec_space or {}).get("name"))
    )
    arch = Architecture(
        project=job.project,
        job_id=job.id,
        name=str(doc.get("name") or f"search-{job.id}")[:200],
        space=space,
        doc=doc,
        mult_adds=mult_adds,
        params=params,
        arch_params=res.arch_params,
        predicted_latency={},
        measured_latency=normalise_measured(res.measured_latency),
        created_at=now,
    )
    if job.latency_table_id is not None:
        table = session.get(LatencyTable, job.latency_table_id)
        if table is not None:
            ms = core.predict_latency_ms(doc, table.doc)
            if ms is not None:
                arch.predicted_latency = {str(table.id): ms}
    session.add(arch)
    session.flush()
    return _with_workers({"architecture_id": arch.id, "metrics": res.metrics}, res.workers)


def _retrain(session: Session, job: Job, res: RetrainResultIn) -> dict:
    top1, top5 = _number(res.metrics.get("top1")), _number(res.metrics.get("top5"))
    if job.architecture_id is not None:
        arch = session.get(Architecture, job.architecture_id)
        if arch is not None:
            # the latest successful retrain defines the architecture's accuracy
            arch.accuracy_top1 = top1 if top1 is not None else arch.accuracy_top1
            arch.accuracy_top5 = top5 if top5 is not None else arch.accuracy_top5
            session.flush()
    return _with_workers(
        {"architecture_id": job.architecture_id, "metrics": res.metrics}, res.workers
    )


def _with_workers(result: dict, workers: list[dict[str, Any]] | None) -> dict:
    """Keep where the ranks ran (node ids, hosts, devices) when the worker said."""
    if workers:
        result["workers"] = workers
    return result


def _profile(session: Session, job: Job, res: ProfileResultIn, now: datetime) -> dict:
    doc = res.latency_table
    core.check_latency_table(doc, "result.latency_table")
    spaces = doc.get("spaces") or []
    spec_space = job.spec.get("space")
    space = (
        spec_space
        if isinstance(spec_space, str)
        else (spaces[0] if spaces else (spec_space or {}).get("name"))
    )
    input_size = doc.get("input_size")
    table = LatencyTable(
        project=job.project,
        job_id=job.id,
        device_name=str(doc.get("device_name"))[:200],
        device_kind=str(doc.get("device_kind")),
        torch_version=doc.get("torch_version"),
        batch=int(doc.get("batch") or 1),
        input_size=input_size if isinstance(input_size, int) else None,
        dtype=doc.get("dtype"),
        method=doc.get("method"),
        space=str(space)[:100] if space else None,
        entry_count=len(doc.get("entries") or []),
        doc=doc,
        created_at=now,
    )
    session.add(table)
    session.flush()
    return {"latency_table_id": table.id}

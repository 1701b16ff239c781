"""What the executor holds on the cluster (admins): Ray's totals and free resources, the
service's placement groups and job actors. After every attempt ends, none of them should stay
(docs/DESIGN.md "One retry budget, and nothing left reserved")."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .. import capacity, jobs
from ..auth import AdminUser, SessionDep
from ..errors import Unavailable
from ..schemas import Cluster
from . import AUTH_ERRORS, problems

router = APIRouter(prefix="/v1", tags=["operations"])


@router.get("/cluster", response_model=Cluster, responses=problems(*AUTH_ERRORS, 503))
def cluster(request: Request, admin: AdminUser, session: SessionDep) -> Cluster:
    held = sum((capacity.demand(k, sp) for k, sp in jobs.running_specs(session)), capacity.Demand())
    held_map = {"CPU": held.cpus, "GPU": held.gpus}
    dispatcher = request.app.state.dispatcher
    executor = getattr(dispatcher, "executor", None)
    state_of = getattr(executor, "cluster_state", None)
    if executor is None:
        return Cluster(executor="none", held_by_running_jobs=held_map)
    if state_of is None:
        return Cluster(executor="inline", held_by_running_jobs=held_map)
    try:
        state = state_of()
    except Exception as exc:  # Ray unreachable: say so, not a 500
        raise Unavailable(f"the Ray cluster did not answer: {type(exc).__name__}: {exc}") from exc
    return Cluster(**state, held_by_running_jobs=held_map)

"""Claims follow cluster capacity: a job is claimed only when the cluster's total, less what
running jobs hold, covers it — in priority order, the first that does not fit blocks the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.capacity import Demand, demand, free_resources, plan_claims
from service.dispatcher import Dispatcher
from tests.support.fake_executor import FakeExecutor, vanish
from tests.support.live import LiveServer
from tests.support.waiting import wait_status


def test_demand_of_each_kind():
    assert demand("search", {"num_workers": 3}) == Demand(3.0, 0.0)
    assert demand("search", {"num_workers": 2, "use_gpu": True}) == Demand(2.0, 2.0)
    assert demand(
        "retrain", {"num_nodes": 2, "workers_per_node": 3, "gpus_per_worker": 0.5}
    ) == Demand(6.0, 3.0)
    assert demand("profile", {"device": {"device": "cuda"}}) == Demand(1.0, 1.0)
    assert demand("profile", {}) == Demand(1.0, 0.0)
    assert demand("search", {}) == Demand(1.0, 0.0)  # the schema default


def test_plan_claims_takes_in_order_and_stops_at_the_first_misfit():
    free = free_resources({"CPU": 8.0, "GPU": 1.0}, [Demand(3.0, 0.0), Demand(1.0, 1.0)])
    assert free == Demand(4.0, 0.0)
    cands = [(1, Demand(2.0)), (2, Demand(2.0)), (3, Demand(1.0))]
    assert plan_claims(cands, free, limit=10) == [1, 2]
    assert plan_claims(cands, free, limit=1) == [1]
    # the head needs a GPU none is free: nothing behind it jumps the queue
    assert plan_claims([(4, Demand(1.0, 1.0)), (5, Demand(1.0))], free, limit=10) == []


@dataclass
class SizedExecutor(FakeExecutor):
    total: dict[str, float] = field(default_factory=lambda: {"CPU": 4.0})

    def capacity(self) -> dict[str, float]:
        return dict(self.total)


def _submit(client, user, workers, priority=0):
    r = client.post(
        "/v1/jobs",
        headers=user,
        json={"kind": "search", "priority": priority, "spec": {"num_workers": workers}},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_dispatcher_claims_only_what_fits_in_priority_order(
    make_settings, session_factory, client, user
):
    ex = SizedExecutor(behaviour=vanish)
    d = Dispatcher(session_factory, ex, make_settings(claim_batch=10), reconcile_on_start=False)
    a = _submit(client, user, 2)
    b = _submit(client, user, 3, priority=5)  # first in claim order, fits alone
    c = _submit(client, user, 1)
    # b takes 3 of 4 CPUs; a (2, queued before c) does not fit and c may not jump it
    assert d.tick().started == [b]
    assert d.tick().started == []
    ex.total = {"CPU": 6.0}  # a node joined: 3 free
    assert d.tick().started == [a, c]


def test_unknown_capacity_claims_nothing_and_inline_claims_freely(
    make_settings, session_factory, client, user
):
    class Broken(SizedExecutor):
        def capacity(self):
            raise ConnectionError("ray head unreachable")

    jid = _submit(client, user, 1)
    d = Dispatcher(
        session_factory, Broken(behaviour=vanish), make_settings(), reconcile_on_start=False
    )
    assert d.tick().started == []
    free = Dispatcher(
        session_factory, FakeExecutor(behaviour=vanish), make_settings(), reconcile_on_start=False
    )  # no capacity(): no limit
    assert free.tick().started == [jid]


def test_cluster_route_shows_what_running_jobs_hold_and_needs_an_admin(make_settings):
    ex = SizedExecutor(behaviour=vanish)
    ex.cluster_state = lambda: {
        "executor": "ray",
        "total": {"CPU": 4.0},
        "available": {"CPU": 1.0},
        "job_actors": [1],
        "placement_groups": [
            {
                "name": "densenas-job-1-a1-1",
                "job_id": 1,
                "attempt": 1,
                "state": "CREATED",
                "cpus": 3.0,
            }
        ],
    }
    with LiveServer(lambda url: make_settings(public_url=url), ex) as live:
        admin = live.client(live.admin_token())
        jid = admin.post("/v1/jobs", json={"kind": "search", "spec": {"num_workers": 3}}).json()[
            "id"
        ]
        wait_status(admin, jid, "running")
        r = admin.get("/v1/cluster")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["held_by_running_jobs"] == {"CPU": 3.0, "GPU": 0.0}
        assert body["total"] == {"CPU": 4.0} and body["placement_groups"][0]["cpus"] == 3.0
        mine = admin.post("/v1/tokens", json={"name": "u", "project": "p"}).json()["token"]
        assert live.client(mine).get("/v1/cluster").status_code == 403
        ex.cluster_state = lambda: (_ for _ in ()).throw(ConnectionError("head gone"))
        r = admin.get("/v1/cluster")
        assert r.status_code == 503 and "head gone" in r.json()["detail"]

"""Architectures as resources: filters, predicted latency, the Pareto front, details with
retrains, downloads, latency tables, spaces, and re-derivation under a budget."""

from __future__ import annotations

import io

import pytest

from service.architectures import pareto_front
from service.models import Architecture, LatencyTable, utcnow
from tests.support.docs import latency_table_doc, small_arch_doc, space_latency_table_doc


def add_arch(session_factory, project="vision", **kw) -> int:
    doc = kw.pop("doc", None) or small_arch_doc(kw.get("name", "a"))
    values = dict(
        project=project,
        name="a",
        space="mbv2-small",
        doc=doc,
        mult_adds=100,
        params=10,
        predicted_latency={},
        measured_latency={},
        created_at=utcnow(),
    )
    values.update(kw)
    with session_factory() as s:
        row = Architecture(**values)
        s.add(row)
        s.commit()
        return row.id


def add_table(session_factory, doc, project="vision") -> int:
    with session_factory() as s:
        row = LatencyTable(
            project=project,
            device_name=doc["device_name"],
            device_kind="cpu",
            batch=1,
            input_size=doc.get("input_size"),
            entry_count=len(doc["entries"]),
            doc=doc,
            created_at=utcnow(),
        )
        s.add(row)
        s.commit()
        return row.id


def test_pareto_front_is_the_non_dominated_set():
    pts = [
        (1, 0.5, "a"),
        (2, 0.7, "b"),
        (2, 0.6, "c"),
        (3, 0.7, "d"),
        (4, 0.9, "e"),
        (0.5, 0.1, "f"),
        (4, 0.9, "g"),
    ]
    assert pareto_front(pts) == ["f", "a", "b", "e", "g"]
    # brute force agrees on random points
    import random

    rng = random.Random(0)
    for _ in range(50):
        pts = [(rng.randint(0, 20), rng.randint(0, 20), i) for i in range(30)]
        brute = {
            i
            for c, a, i in pts
            if not any((c2 <= c and a2 >= a and (c2, a2) != (c, a)) for c2, a2, _ in pts)
        }
        assert set(pareto_front(pts)) == brute


def test_filters_and_pareto_over_rest(client, user, other, session_factory):
    ids = {
        "cheap": add_arch(session_factory, name="cheap", mult_adds=100, accuracy_top1=60.0),
        "mid": add_arch(session_factory, name="mid", mult_adds=200, accuracy_top1=70.0),
        "dominated": add_arch(session_factory, name="dominated", mult_adds=300, accuracy_top1=65.0),
        "best": add_arch(session_factory, name="best", mult_adds=400, accuracy_top1=80.0),
        "unrated": add_arch(session_factory, name="unrated", mult_adds=50),
        "resnet": add_arch(
            session_factory, name="resnet", space="resnet-small", mult_adds=10, accuracy_top1=10.0
        ),
    }
    add_arch(session_factory, project="speech", name="foreign", mult_adds=1, accuracy_top1=99.0)

    def names(query: str) -> list[str]:
        r = client.get(f"/v1/architectures?{query}", headers=user)
        assert r.status_code == 200, r.text
        return [a["name"] for a in r.json()["data"]]

    assert "foreign" not in names("")
    assert names("max_mult_adds=200") == ["resnet", "unrated", "mid", "cheap"]
    assert names("min_accuracy=70") == ["best", "mid"]
    assert names("space=resnet-small") == ["resnet"]
    assert names("pareto=mult_adds,accuracy&space=mbv2-small") == ["cheap", "mid", "best"]
    assert names("pareto=mult_adds,accuracy") == ["resnet", "cheap", "mid", "best"]
    r = client.get("/v1/architectures?pareto=flops", headers=user)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "pareto"
    r = client.get("/v1/architectures?max_latency_ms=3", headers=user)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "latency_table_id"
    # paging
    page = client.get("/v1/architectures?limit=4", headers=user).json()
    rest = client.get(
        f"/v1/architectures?limit=4&cursor={page['next_cursor']}", headers=user
    ).json()
    got = [a["id"] for a in page["data"] + rest["data"]]
    assert sorted(got) == sorted(ids.values()) and rest["next_cursor"] is None
    # foreign architecture and table: 404
    foreign = add_arch(session_factory, project="speech", name="f2")
    assert client.get(f"/v1/architectures/{foreign}", headers=user).status_code == 404
    assert client.get(f"/v1/architectures/{foreign}", headers=other).status_code == 200


def test_latency_filter_and_pareto_use_predictions(client, user, session_factory):
    doc = small_arch_doc("net")
    table = add_table(session_factory, latency_table_doc(doc, ms_per_op=0.1))
    slow = add_table(session_factory, latency_table_doc(doc, ms_per_op=1.0, device_name="slow"))
    a = add_arch(session_factory, name="a", doc=doc, accuracy_top1=50.0, mult_adds=5)
    foreign_table = add_table(session_factory, latency_table_doc(doc), project="speech")
    r = client.get(f"/v1/architectures?max_latency_ms=1000&latency_table_id={table}", headers=user)
    assert [x["id"] for x in r.json()["data"]] == [a]
    ms = r.json()["data"][0]["predicted_latency"][str(table)]
    assert ms > 0
    r = client.get(
        f"/v1/architectures?max_latency_ms={ms / 2}&latency_table_id={table}", headers=user
    )
    assert r.json()["data"] == []
    r = client.get(
        f"/v1/architectures?pareto=latency,accuracy&latency_table_id={table}", headers=user
    )
    assert [x["id"] for x in r.json()["data"]] == [a]
    r = client.get(
        f"/v1/architectures?max_latency_ms=1&latency_table_id={foreign_table}", headers=user
    )
    assert r.status_code == 422
    detail = client.get(f"/v1/architectures/{a}", headers=user).json()
    assert detail["predicted_latency"][str(slow)] == pytest.approx(10 * ms)
    assert str(foreign_table) not in detail["predicted_latency"]
    tables = client.get("/v1/latency-tables", headers=user).json()["data"]
    assert {t["id"] for t in tables} == {table, slow}
    assert client.get(f"/v1/latency-tables/{foreign_table}", headers=user).status_code == 404
    got = client.get(f"/v1/latency-tables/{table}", headers=user).json()
    assert got["doc"]["entries"] and got["entry_count"] == len(got["doc"]["entries"])


def test_download_json_and_onnx(client, user, session_factory):
    pytest.importorskip("onnx")
    import onnx

    doc = small_arch_doc("exported")
    a = add_arch(session_factory, doc=doc)
    r = client.get(f"/v1/architectures/{a}/download", headers=user)
    assert r.status_code == 200 and r.json() == doc
    assert "attachment" in r.headers["content-disposition"]
    r = client.get(f"/v1/architectures/{a}/download?format=onnx", headers=user)
    assert r.status_code == 200, r.text
    model = onnx.load_model(io.BytesIO(r.content))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]
    r = client.get(f"/v1/architectures/{a}/download?format=pt", headers=user)
    assert r.status_code == 422


def test_onnx_export_failure_is_a_422_problem(client, user, session_factory):
    broken = dict(small_arch_doc(), blocks=[])  # stored docs are trusted; export still fails
    a = add_arch(session_factory, doc=broken)
    r = client.get(f"/v1/architectures/{a}/download?format=onnx", headers=user)
    assert r.status_code == 422 and "ONNX export failed" in r.json()["detail"]


def test_retrain_of_a_foreign_architecture_is_refused(client, user, other, session_factory, rows):
    theirs = add_arch(session_factory, project="speech", name="theirs")
    before = rows("jobs")
    r = client.post(
        "/v1/jobs", headers=user, json={"kind": "retrain", "spec": {"architecture_id": theirs}}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "spec.architecture_id"
    assert rows("jobs") == before
    r = client.post(
        "/v1/jobs", headers=other, json={"kind": "retrain", "spec": {"architecture_id": theirs}}
    )
    assert r.status_code == 201 and r.json()["architecture_id"] == theirs


def test_spaces(client, user):
    spaces = client.get("/v1/spaces", headers=user).json()["data"]
    names = [s["name"] for s in spaces]
    assert {"mbv2-small", "mbv2-imagenet", "resnet-small", "resnet-imagenet"} <= set(names)
    small = client.get("/v1/spaces/mbv2-small", headers=user).json()
    assert small["summary"]["routing_blocks"] == len(small["blocks"]) - 2
    assert small["description"]["name"] == "mbv2-small"
    assert client.get("/v1/spaces/nope", headers=user).status_code == 404


# -- derive ------------------------------------------------------------------------------------


@pytest.fixture
def finished_search(client, user, claim):
    """A search completed through the worker route with real α/β of mbv2-small."""
    import torch

    from densenas_core.derive import derive_architecture
    from densenas_core.spaces import get_space
    from densenas_core.supernet import SuperNet

    torch.manual_seed(0)
    net = SuperNet(get_space("mbv2-small"), 10, 32, 1)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    ap = {"alpha": net.alpha_lists(), "beta": net.beta_lists()}
    doc = derive_architecture(
        "mbv2-small",
        ap["alpha"],
        ap["beta"],
        input_size=32,
        num_classes=10,
        in_channels=1,
        name="searched",
    )
    job = client.post("/v1/jobs", headers=user, json={"kind": "search"}).json()
    [(jid, worker)] = claim()
    r = client.post(
        f"/v1/jobs/{jid}/complete",
        headers=worker,
        json={"outcome": "succeeded", "result": {"architecture": doc, "arch_params": ap}},
    )
    assert r.status_code == 200, r.text
    return job["id"], r.json()["result"]["architecture_id"]


def test_derive_with_a_budget(client, user, other, finished_search):
    jid, source = finished_search
    original = client.get(f"/v1/architectures/{source}", headers=user).json()
    same = client.post(
        f"/v1/jobs/{jid}/derive",
        headers=user,
        json={"cost": {"max_mult_adds": original["mult_adds"]}},
    )
    assert same.status_code == 201, same.text
    assert same.json()["doc"]["blocks"] == original["doc"]["blocks"]  # argmax fits already
    smaller = client.post(
        f"/v1/jobs/{jid}/derive",
        headers=user,
        json={"cost": {"max_mult_adds": original["mult_adds"] - 1}, "name": "budget"},
    )
    assert smaller.status_code == 201, smaller.text
    body = smaller.json()
    assert body["mult_adds"] < original["mult_adds"] and body["name"] == "budget"
    assert body["derived_from"] == source and body["job_id"] == jid
    assert body["doc"]["input_size"] == 32 and body["doc"]["in_channels"] == 1
    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert set(job["produced"]["architectures"]) == {source, same.json()["id"], body["id"]}
    r = client.post(f"/v1/jobs/{jid}/derive", headers=user, json={"cost": {"max_mult_adds": 1}})
    assert r.status_code == 422 and "cheapest" in r.json()["detail"]
    assert client.post(f"/v1/jobs/{jid}/derive", headers=user, json={"cost": {}}).status_code == 422
    assert (
        client.post(
            f"/v1/jobs/{jid}/derive", headers=other, json={"cost": {"max_mult_adds": 10**9}}
        ).status_code
        == 404
    )


def test_derive_changes_ops_to_meet_a_tight_budget(client, user, finished_search):
    jid, source = finished_search
    original = client.get(f"/v1/architectures/{source}", headers=user).json()
    # below every block path's argmax cost: only op changes (skips, narrower ops) get there
    r = client.post(
        f"/v1/jobs/{jid}/derive",
        headers=user,
        json={"cost": {"max_mult_adds": original["mult_adds"] // 2}},
    )
    assert r.status_code == 201, r.text
    assert r.json()["mult_adds"] <= original["mult_adds"] // 2


def test_derive_under_a_latency_budget(client, user, finished_search, session_factory):
    jid, source = finished_search
    table = add_table(session_factory, space_latency_table_doc())
    detail = client.get(f"/v1/architectures/{source}", headers=user).json()
    full = detail["predicted_latency"][str(table)]
    budget = full * 0.6
    r = client.post(
        f"/v1/jobs/{jid}/derive",
        headers=user,
        json={"cost": {"max_latency_ms": budget, "latency_table_id": table}},
    )
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["predicted_latency"][str(table)] <= budget
    r = client.post(
        f"/v1/jobs/{jid}/derive",
        headers=user,
        json={"cost": {"max_latency_ms": 1e-9, "latency_table_id": table}},
    )
    assert r.status_code == 422 and r.json()["cheapest"]["latency_ms"] > 0
    r = client.post(f"/v1/jobs/{jid}/derive", headers=user, json={"cost": {"max_latency_ms": 1.0}})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "cost.latency_table_id"


def test_derive_needs_a_succeeded_search(client, user):
    queued = client.post("/v1/jobs", headers=user, json={"kind": "search"}).json()
    r = client.post(
        f"/v1/jobs/{queued['id']}/derive", headers=user, json={"cost": {"max_mult_adds": 10**9}}
    )
    assert r.status_code == 409 and r.json()["current_state"] == "queued"
    prof = client.post("/v1/jobs", headers=user, json={"kind": "profile"}).json()
    r = client.post(
        f"/v1/jobs/{prof['id']}/derive", headers=user, json={"cost": {"max_mult_adds": 10**9}}
    )
    assert r.status_code == 422

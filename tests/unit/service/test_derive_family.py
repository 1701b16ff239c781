"""Derive-only family (issue 14): ``POST /v1/jobs/{id}/derive-family`` derives one architecture
per budget from one finished search, in one transaction, in the budgets' order."""

from __future__ import annotations

import pytest

from tests.support.docs import space_latency_table_doc
from tests.unit.service.test_architectures import add_table
from tests.unit.service.test_architectures import finished_search as finished_search  # fixture


def family(client, headers, jid, body):
    return client.post(f"/v1/jobs/{jid}/derive-family", headers=headers, json=body)


def locs(r) -> list[str]:
    return [e["loc"] for e in r.json()["errors"]]


def test_one_architecture_per_budget_in_request_order(client, user, finished_search):
    jid, source = finished_search
    full = client.get(f"/v1/architectures/{source}", headers=user).json()["mult_adds"]
    budgets = [full, full // 2, (3 * full) // 4]
    r = family(client, user, jid, {"budgets": [{"max_mult_adds": b} for b in budgets]})
    assert r.status_code == 201, r.text
    got = r.json()["data"]
    assert [a["mult_adds"] <= b for a, b in zip(got, budgets)] == [True] * 3
    assert got[1]["mult_adds"] < got[2]["mult_adds"] <= got[0]["mult_adds"]
    assert all(a["derived_from"] == source and a["job_id"] == jid for a in got)
    assert [a["name"] for a in got] == [f"search-{jid}-{b}madds" for b in budgets]
    assert len({a["id"] for a in got}) == 3
    # each is what the single form derives for that budget (same name, same document)
    for a, b in zip(got, budgets):
        one = client.post(
            f"/v1/jobs/{jid}/derive", headers=user, json={"cost": {"max_mult_adds": b}}
        ).json()
        assert one["doc"] == a["doc"] and one["mult_adds"] == a["mult_adds"]
    job = client.get(f"/v1/jobs/{jid}", headers=user).json()
    assert {a["id"] for a in got} <= set(job["produced"]["architectures"])
    events = client.get(f"/v1/jobs/{jid}/events?format=json", headers=user).json()["data"]
    derived = [e["data"] for e in events if e["type"] == "derived"]
    assert [e["architecture_id"] for e in derived[:3]] == [a["id"] for a in got]
    assert [e["cost"]["max_mult_adds"] for e in derived[:3]] == budgets


def test_identical_budgets_give_the_identical_architecture(client, user, finished_search, rows):
    jid, source = finished_search
    full = client.get(f"/v1/architectures/{source}", headers=user).json()["mult_adds"]
    before = rows("architectures")
    cost = {"max_mult_adds": full // 2, "top_k": 8}
    r = family(client, user, jid, {"budgets": [cost, {"max_mult_adds": full}, cost], "name": "f"})
    assert r.status_code == 201, r.text
    a, b, c = r.json()["data"]
    assert a == c and a["id"] != b["id"]  # derived once, answered at both places
    assert a["name"] == f"f-{full // 2}madds" and b["name"] == f"f-{full}madds"
    assert rows("architectures") == before + 2
    again = family(client, user, jid, {"budgets": [cost, cost]}).json()["data"]
    assert again[0]["doc"]["blocks"] == a["doc"]["blocks"]  # deterministic across requests


def test_latency_budgets_with_a_table(client, user, finished_search, session_factory):
    jid, source = finished_search
    table = add_table(session_factory, space_latency_table_doc())
    full = client.get(f"/v1/architectures/{source}", headers=user).json()
    ms = full["predicted_latency"][str(table)]
    budgets = [
        {"max_latency_ms": ms * 0.6, "latency_table_id": table},
        {"max_latency_ms": ms * 0.8, "latency_table_id": table},
        {"max_mult_adds": full["mult_adds"] // 2, "max_latency_ms": ms, "latency_table_id": table},
    ]
    r = family(client, user, jid, {"budgets": budgets})
    assert r.status_code == 201, r.text
    got = r.json()["data"]
    for a, b in zip(got, budgets):
        assert a["predicted_latency"][str(table)] <= b["max_latency_ms"]
    assert got[2]["mult_adds"] <= full["mult_adds"] // 2


@pytest.mark.parametrize(
    ("route", "body", "loc"),
    [
        ("derive-family", {"cost": {"max_mult_adds": 10**9}}, "budgets cost"),
        ("derive-family", {"cost": {"max_mult_adds": 10**9}, "budgets": [{}, {}]}, "cost"),
        ("derive-family", {}, "budgets"),
        ("derive-family", {"budgets": [{"max_mult_adds": 10**9}]}, "budgets"),
        ("derive-family", {"budgets": [{"max_mult_adds": 10**9}] * 17}, "budgets"),
        ("derive-family", {"budgets": [{"max_mult_adds": 10**9}, {}]}, "budgets[1]"),
        (
            "derive-family",
            {"budgets": [{"max_latency_ms": 1.0}, {"max_mult_adds": 10**9}]},
            "budgets[0].latency_table_id",
        ),
        (
            "derive-family",
            {"budgets": [{"max_mult_adds": 10**9}, {"max_mult_adds": 0}]},
            "budgets[1].max_mult_adds",
        ),
        ("derive", {"budgets": [{"max_mult_adds": 10**9}] * 2}, "budgets"),
        ("derive", {"cost": {"max_mult_adds": 10**9}, "budgets": [{}, {}]}, "budgets"),
    ],
)
def test_422s_name_the_field(client, user, finished_search, route, body, loc):
    jid, _ = finished_search
    r = client.post(f"/v1/jobs/{jid}/{route}", headers=user, json=body)
    assert r.status_code == 422, r.text
    assert sorted(locs(r)) == loc.split()  # one error per field named


def test_a_budget_nothing_fits_stores_nothing(client, user, finished_search, rows):
    jid, _ = finished_search
    arch_rows, event_rows = rows("architectures"), rows("job_events")
    r = family(client, user, jid, {"budgets": [{"max_mult_adds": 10**9}, {"max_mult_adds": 1}]})
    assert r.status_code == 422 and locs(r) == ["budgets[1]"]
    assert r.json()["cheapest"]["mult_adds"] > 1
    assert rows("architectures") == arch_rows and rows("job_events") == event_rows


def test_project_isolation(client, user, other, finished_search, session_factory):
    jid, _ = finished_search
    body = {"budgets": [{"max_mult_adds": 10**9}, {"max_mult_adds": 10**8}]}
    assert family(client, other, jid, body).status_code == 404
    foreign = add_table(session_factory, space_latency_table_doc(), project="speech")
    cost = {"max_latency_ms": 1e3, "latency_table_id": foreign}
    r = family(client, user, jid, {"budgets": [{"max_mult_adds": 10**9}, cost]})
    assert r.status_code == 422 and locs(r) == ["budgets[1].latency_table_id"]


def test_needs_a_succeeded_search(client, user):
    queued = client.post("/v1/jobs", headers=user, json={"kind": "search"}).json()
    body = {"budgets": [{"max_mult_adds": 10**9}, {"max_mult_adds": 10**8}]}
    r = family(client, user, queued["id"], body)
    assert r.status_code == 409 and r.json()["current_state"] == "queued"

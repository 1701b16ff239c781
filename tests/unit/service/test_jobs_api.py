"""Job creation (validation, idempotency), reads, filters and keyset pagination over REST."""

from __future__ import annotations

import time

import pytest


def create(client, headers, kind="search", spec=None, **kw):
    body = {"kind": kind, **kw}
    if spec is not None:
        body["spec"] = spec
    return client.post("/v1/jobs", headers=headers, json=body)


CUSTOM_SPACE_BAD_WIDTH = {
    "stem": {"channels": 16, "stride": 1},
    "tail_channels": 64,
    "align_ops": ["mb_k3_e3"],
    "layer_ops": ["mb_k3_e3", "skip"],
    "stages": [{"stride": 2, "widths": [24, -8], "num_layers": 1}],
}


@pytest.mark.parametrize(
    "body,loc",
    [
        ({"kind": "search", "spec": {"batch_size": 0}}, "spec.batch_size"),
        ({"kind": "search", "spec": {"batch_size": 4097}}, "spec.batch_size"),
        ({"kind": "search", "spec": {"epochs": 0}}, "spec.epochs"),
        ({"kind": "search", "spec": {"epochs": 1001}}, "spec.epochs"),
        ({"kind": "search", "spec": {"epoch": 3}}, "spec.epoch"),
        ({"kind": "search", "spec": {"space": "mbv3-huge"}}, "spec.space"),
        (
            {"kind": "search", "spec": {"space": CUSTOM_SPACE_BAD_WIDTH}},
            "spec.space.stages[0].widths[1]",
        ),
        ({"kind": "search", "spec": {"dataset": {"name": "mnist"}}}, "spec.dataset.name"),
        ({"kind": "search", "spec": {"dataset": {"limit_train": 0}}}, "spec.dataset.limit_train"),
        ({"kind": "search", "spec": {"warmup_epochs": 5, "epochs": 2}}, "spec.warmup_epochs"),
        ({"kind": "search", "spec": {"cost": {"metric": "latency"}}}, "spec.cost.latency_table_id"),
        (
            {"kind": "search", "spec": {"cost": {"latency_table_id": 77}}},
            "spec.cost.latency_table_id",
        ),
        ({"kind": "search", "spec": {"a_betas": [0.5, 1.5]}}, "spec.a_betas[1]"),
        ({"kind": "search", "priority": 10_000}, "priority"),
        ({"kind": "retrain", "spec": {}}, "spec.architecture_id"),
        ({"kind": "retrain", "spec": {"architecture_id": 12345}}, "spec.architecture_id"),
        ({"kind": "retrain", "spec": {"architecture_id": 1, "epochs": 0}}, "spec.epochs"),
        ({"kind": "profile", "spec": {"repeats": 0}}, "spec.repeats"),
        ({"kind": "profile", "spec": {"device": {"device": "tpu"}}}, "spec.device.device"),
        ({"kind": "train", "spec": {}}, "kind"),
        ({"spec": {}}, "kind"),
    ],
)
def test_bad_spec_is_422_naming_the_field_and_stores_nothing(client, user, rows, body, loc):
    before = rows("jobs"), rows("job_events")
    r = client.post("/v1/jobs", headers=user, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    locs = [e["loc"] for e in problem["errors"]]
    assert loc in locs, problem
    assert problem["detail"].startswith(problem["errors"][0]["loc"])
    assert (rows("jobs"), rows("job_events")) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'"search"', b"\xff\xfe"])
def test_malformed_bodies_are_422_never_500(client, user, raw):
    r = client.post("/v1/jobs", headers={**user, "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 422, r.text


def test_defaults_are_filled_in_and_stored(client, user):
    r = create(client, user, spec={"epochs": 2, "dataset": {"name": "synthetic"}})
    assert r.status_code == 201
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    spec = job["spec"]
    assert spec["epochs"] == 2 and spec["batch_size"] == 64 and spec["space"] == "mbv2-small"
    assert spec["cost"]["metric"] == "flops" and spec["a_betas"] == [0.5, 0.999]
    assert job["status"] == "queued" and job["attempt"] == 1 and job["max_attempts"] == 3
    assert job["produced"] == {"architectures": [], "latency_tables": []}
    assert client.get(f"/v1/jobs/{job['id']}", headers=user).json() == job


def test_custom_space_that_builds_is_accepted(client, user):
    space = dict(
        CUSTOM_SPACE_BAD_WIDTH,
        stages=[{"stride": 2, "widths": [24, 32], "num_layers": 1}],
        name="tiny",
    )
    r = create(client, user, kind="profile", spec={"space": space, "repeats": 3})
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["space"]["name"] == "tiny"


def test_idempotency_key_returns_the_same_job(client, user, other, rows):
    key = {"Idempotency-Key": "submit-42"}
    r1 = client.post("/v1/jobs", headers={**user, **key}, json={"kind": "search"})
    r2 = client.post("/v1/jobs", headers={**user, **key}, json={"kind": "search"})
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["id"] == r2.json()["id"]
    assert rows("jobs") == 1
    # same key, different request → 409, nothing new
    r3 = client.post(
        "/v1/jobs", headers={**user, **key}, json={"kind": "search", "spec": {"epochs": 9}}
    )
    assert r3.status_code == 409 and r3.json()["current_state"] == "queued"
    # the key is per project
    r4 = client.post("/v1/jobs", headers={**other, **key}, json={"kind": "search"})
    assert r4.status_code == 201 and r4.json()["id"] != r1.json()["id"]
    assert rows("jobs") == 2


def test_unknown_job_is_404(client, user):
    for method, path in (
        ("GET", "/v1/jobs/999"),
        ("POST", "/v1/jobs/999/cancel"),
        ("POST", "/v1/jobs/999/retry"),
        ("GET", "/v1/jobs/999/events"),
        ("GET", "/v1/jobs/999/events?format=json"),
    ):
        r = client.request(method, path, headers=user)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["status"] == 404


def test_list_filters(client, admin, user):
    s = create(client, user).json()
    p = create(client, user, kind="profile").json()
    client.post(f"/v1/jobs/{p['id']}/cancel", headers=user)

    def ids(query: str) -> list[int]:
        r = client.get(f"/v1/jobs?{query}", headers=user)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["data"]]

    assert ids("status=queued") == [s["id"]]
    assert ids("status=cancelled") == [p["id"]]
    assert sorted(ids("status=queued,cancelled")) == sorted([s["id"], p["id"]])
    assert ids("kind=profile") == [p["id"]]
    assert ids("sort=created_at") == [s["id"], p["id"]]
    assert ids("sort=-created_at") == [p["id"], s["id"]]
    created = s["created_at"]
    assert ids(f"created_after={created}") == [p["id"]]
    assert ids(f"created_before={p['created_at']}") == [s["id"]]
    assert client.get("/v1/jobs?status=bogus", headers=user).status_code == 422
    assert client.get("/v1/jobs?sort=name", headers=user).status_code == 422
    assert client.get("/v1/jobs?limit=0", headers=user).status_code == 422


def test_priority_sort(client, user):
    low = create(client, user, priority=-5).json()
    high = create(client, user, priority=7).json()
    mid = create(client, user).json()
    data = client.get("/v1/jobs?sort=-priority", headers=user).json()["data"]
    assert [j["id"] for j in data] == [high["id"], mid["id"], low["id"]]
    data = client.get("/v1/jobs?sort=priority&limit=2", headers=user).json()
    assert [j["id"] for j in data["data"]] == [low["id"], mid["id"]]
    rest = client.get(f"/v1/jobs?sort=priority&cursor={data['next_cursor']}", headers=user).json()
    assert [j["id"] for j in rest["data"]] == [high["id"]] and rest["next_cursor"] is None


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "-priority"])
def test_keyset_pages_are_stable_while_jobs_are_inserted(client, user, sort):
    original = [create(client, user, priority=i % 3).json()["id"] for i in range(23)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        q = f"/v1/jobs?sort={sort}&limit=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(q, headers=user).json()
        seen += [j["id"] for j in page["data"]]
        pages += 1
        # somebody keeps submitting while we page
        create(client, user, priority=1)
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 50
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert set(original) <= set(seen), "a row was skipped"
    if sort == "-created_at":
        assert seen == sorted(original, reverse=True)  # new rows land before the first page


def test_bad_cursors_are_422(client, user):
    create(client, user)
    create(client, user)
    page = client.get("/v1/jobs?limit=1", headers=user).json()
    assert page["next_cursor"]
    for cursor in ("garbage!!", "eyJzIjoxfQ", page["next_cursor"][:-3]):
        r = client.get(f"/v1/jobs?limit=1&cursor={cursor}", headers=user)
        assert r.status_code == 422, (cursor, r.text)
    r = client.get(f"/v1/jobs?limit=1&sort=priority&cursor={page['next_cursor']}", headers=user)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "cursor"


def test_stats_counts_by_status(client, user, other):
    create(client, user)
    j = create(client, user).json()
    create(client, other)
    client.post(f"/v1/jobs/{j['id']}/cancel", headers=user)
    counts = client.get("/v1/jobs/stats", headers=user).json()["counts"]
    assert counts == {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}


def test_request_body_over_the_limit_is_413(make_settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(make_settings(max_payload_bytes=2048))
    with TestClient(app) as c:
        token = c.app.state.settings.admin_token_path.read_text().strip()
        h = {"Authorization": f"Bearer {token}"}
        big = {"kind": "search", "spec": {"space": {"name": "x" * 5000}}}
        r = c.post("/v1/jobs", headers=h, json=big)
        assert r.status_code == 413 and r.json()["status"] == 413

        def chunks():  # no Content-Length: the limit still applies while streaming
            yield b'{"kind": "search", "spec": {"space": {"name": "'
            for _ in range(10):
                yield b"y" * 512
                time.sleep(0)
            yield b'"}}}'

        r = c.post("/v1/jobs", headers={**h, "Content-Type": "application/json"}, content=chunks())
        assert r.status_code == 413
        assert c.post("/v1/jobs", headers=h, json={"kind": "search"}).status_code == 201

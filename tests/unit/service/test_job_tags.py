"""Job tags (issue 14): set at creation and by PUT /v1/jobs/{id}/tags, shown on JobPublic the
same way by the hot read and the list pages, filtered with ?tag=; and the ?parent= /
?top_level= filters of a sweep's trials."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from service.models import Job


def create(client, headers, tags=None, **body):
    if tags is not None:
        body["tags"] = tags
    r = client.post("/v1/jobs", headers=headers, json={"kind": "search", **body})
    assert r.status_code == 201, r.text
    return r.json()


def ids(client, headers, **params) -> list[int]:
    r = client.get("/v1/jobs", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["data"]]


def test_tags_are_stored_sorted_without_repeats_and_read_alike(client, user):
    job = create(client, user, tags=["lr=0.1", "baseline", "lr=0.1", "team/vision"])
    assert job["tags"] == ["baseline", "lr=0.1", "team/vision"]
    assert create(client, user)["tags"] == []
    one = client.get(f"/v1/jobs/{job['id']}", headers=user).json()  # the hot read
    listed = client.get("/v1/jobs", headers=user).json()["data"]
    assert one == next(j for j in listed if j["id"] == job["id"]) == job


@pytest.mark.parametrize(
    "tags",
    [
        ["has space"],
        [""],
        ["-leading-dash"],
        ["x" * 65],
        ["comma,inside"],
        [f"t{i}" for i in range(17)],
        "not-a-list",
        [3],
    ],
)
def test_bad_tags_are_422_naming_the_field(client, user, rows, tags):
    before = rows("jobs"), rows("job_tags")
    r = client.post("/v1/jobs", headers=user, json={"kind": "search", "tags": tags})
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["errors"]]
    assert any(loc == "tags" or loc.startswith("tags[") for loc in locs), locs
    assert (rows("jobs"), rows("job_tags")) == before


def test_list_filters_by_every_given_tag(client, user, other):
    a = create(client, user, tags=["exp1", "lr=0.1"])["id"]
    b = create(client, user, tags=["exp1", "lr=0.05"])["id"]
    c = create(client, user, tags=["exp2"])["id"]
    create(client, other, tags=["exp1"])  # another project's job never shows
    assert ids(client, user, tag="exp1") == [b, a]
    assert ids(client, user, tag=["exp1", "lr=0.1"]) == [a]
    assert ids(client, user, tag=["exp1", "exp2"]) == []
    assert ids(client, user, tag="exp2") == [c]
    assert ids(client, user, tag="nope") == []
    r = client.get("/v1/jobs", headers=user, params={"tag": "bad tag"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "tag"
    r = client.get("/v1/jobs", headers=user, params={"tag": [f"t{i}" for i in range(17)]})
    assert r.status_code == 422 and "tag" in r.json()["errors"][0]["loc"]


def test_list_filters_by_parent_and_top_level(client, user, session_factory):
    sweep = create(client, user)["id"]
    trials = [create(client, user)["id"] for _ in range(2)]
    other_sweep = create(client, user)["id"]
    stray = create(client, user)["id"]
    with session_factory() as s:
        s.execute(update(Job).where(Job.id.in_(trials)).values(parent_id=sweep))
        s.execute(update(Job).where(Job.id == stray).values(parent_id=other_sweep))
        s.commit()
    assert ids(client, user, parent=sweep) == trials[::-1]
    assert ids(client, user, parent=other_sweep) == [stray]
    assert ids(client, user, top_level="true") == [other_sweep, sweep]
    assert len(ids(client, user)) == 5  # all jobs by default
    assert ids(client, user, parent=sweep, top_level="true") == []
    assert client.get("/v1/jobs", headers=user, params={"parent": "x"}).status_code == 422


def test_put_tags_replaces_them(client, user, other, admin, rows):
    job = create(client, user, tags=["a", "b"])
    r = client.put(f"/v1/jobs/{job['id']}/tags", headers=user, json={"tags": ["c", "b", "c"]})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["b", "c"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=user).json()["tags"] == ["b", "c"]
    assert ids(client, user, tag="a") == [] and ids(client, user, tag="c") == [job["id"]]
    # an admin may tag any project's job; another project's member gets a 404
    r = client.put(f"/v1/jobs/{job['id']}/tags", headers=admin, json={"tags": []})
    assert r.status_code == 200 and r.json()["tags"] == []
    assert rows("job_tags") == 0
    r = client.put(f"/v1/jobs/{job['id']}/tags", headers=other, json={"tags": ["x"]})
    assert r.status_code == 404
    assert client.put("/v1/jobs/999/tags", headers=user, json={"tags": []}).status_code == 404
    r = client.put(f"/v1/jobs/{job['id']}/tags", headers=user, json={"tags": ["no good"]})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"].startswith("tags")
    assert client.put(f"/v1/jobs/{job['id']}/tags", headers=user, json={}).status_code == 422
    assert rows("job_tags") == 0


def test_idempotency_fingerprint_includes_the_tags(client, user, rows):
    key = {"Idempotency-Key": "tagged-1"}
    body = {"kind": "search", "tags": ["exp1", "lr=0.1"]}
    r1 = client.post("/v1/jobs", headers={**user, **key}, json=body)
    # the same tags in another order, or repeated, are the same request
    same = {"kind": "search", "tags": ["lr=0.1", "exp1", "exp1"]}
    r2 = client.post("/v1/jobs", headers={**user, **key}, json=same)
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["id"] == r2.json()["id"] and r2.json()["tags"] == ["exp1", "lr=0.1"]
    for tags in (["exp1"], ["exp1", "lr=0.1", "more"], []):
        r = client.post("/v1/jobs", headers={**user, **key}, json={"kind": "search", "tags": tags})
        assert r.status_code == 409, (tags, r.text)
    assert rows("jobs") == 1 and rows("job_tags") == 2

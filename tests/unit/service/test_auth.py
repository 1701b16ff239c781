"""Authentication and authorization: every /v1 route refuses anonymous and bad tokens, admin
routes refuse users, job tokens reach only their own job's worker routes, projects are isolated,
and tokens are stored hashed only."""

from __future__ import annotations

import logging
import os
import re
import stat

import pytest
from sqlalchemy import select

from service.models import Token
from service.tokens import ensure_admin_token, hash_token


def _v1_routes(app) -> list[tuple[str, str]]:
    out = []
    for path, item in app.openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method in item:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return out


def test_every_v1_route_needs_a_valid_token(client, app):
    routes = _v1_routes(app)
    assert len(routes) >= 18, routes
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer dn_not-a-real-token"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer "},
        ):
            r = client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_health_and_metrics_need_no_token(client):
    assert client.get("/healthz").json()["database"] == "ok"
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/v1/tokens", None),
        ("POST", "/v1/tokens", {"name": "eve"}),
        ("DELETE", "/v1/tokens/1", None),
    ],
)
def test_admin_routes_refuse_users(client, user, method, path, body):
    r = client.request(method, path, headers=user, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["title"] == "Forbidden"


def test_admin_manages_tokens_and_revocation_is_immediate(client, admin):
    r = client.post(
        "/v1/tokens", headers=admin, json={"name": "carol", "project": "vision", "admin": False}
    )
    assert r.status_code == 201, r.text
    created = r.json()
    carol = {"Authorization": f"Bearer {created['token']}"}
    me = client.get("/v1/me", headers=carol).json()
    assert me == {
        "id": created["id"],
        "name": "carol",
        "project": "vision",
        "is_admin": False,
        "job_id": None,
    }
    listed = client.get("/v1/tokens", headers=admin).json()["data"]
    assert {t["name"] for t in listed} >= {"admin", "carol"}
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert client.delete(f"/v1/tokens/{created['id']}", headers=admin).status_code == 204
    assert client.get("/v1/me", headers=carol).status_code == 401
    assert client.delete("/v1/tokens/9999", headers=admin).status_code == 404


def test_tokens_are_stored_as_sha256_only(client, admin_token, session_factory):
    with session_factory() as s:
        rows = s.scalars(select(Token)).all()
    assert rows
    for row in rows:
        assert admin_token not in (row.token_hash, row.prefix, row.name)
    assert any(r.token_hash == hash_token(admin_token) for r in rows)


def test_bootstrap_admin_token_file_is_private_and_minted_once(client, settings, caplog):
    path = settings.admin_token_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    with caplog.at_level(logging.DEBUG):
        assert ensure_admin_token(settings, client.app.state.session_factory) is None
    assert path.read_text().strip() == token  # not replaced on a non-empty table


def test_bootstrap_logs_the_path_never_the_token(make_settings, tmp_path, caplog):
    from service.db import make_engine, make_session_factory

    settings = make_settings(data_dir=tmp_path / "fresh")
    engine = make_engine(settings.database_url)
    try:
        with caplog.at_level(logging.DEBUG, logger="service"):
            path = ensure_admin_token(settings, make_session_factory(engine))
    finally:
        engine.dispose()
    token = path.read_text().strip()
    assert str(path) in caplog.text
    assert token not in caplog.text


def test_configured_admin_token_is_used_and_hashed(make_settings, tmp_path):
    from service.db import make_engine, make_session_factory

    secret = "s3cret-admin-token-from-k8s-secret-0123456789"
    settings = make_settings(data_dir=tmp_path / "d2", admin_token=secret)
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        assert ensure_admin_token(settings, factory) is None
        assert not settings.admin_token_path.exists()
        with factory() as s:
            row = s.scalar(select(Token))
            assert row.is_admin and row.token_hash == hash_token(secret)
    finally:
        engine.dispose()


def _search(client, headers, **kw):
    r = client.post("/v1/jobs", headers=headers, json={"kind": "search", "spec": kw})
    assert r.status_code == 201, r.text
    return r.json()


def test_projects_are_isolated_and_admins_see_all(client, admin, user, other):
    mine = _search(client, user)
    theirs = _search(client, other)
    assert mine["project"] == "vision" and theirs["project"] == "speech"
    for path in (f"/v1/jobs/{theirs['id']}", f"/v1/jobs/{theirs['id']}/events?format=json"):
        r = client.get(path, headers=user)
        assert r.status_code == 404, r.text
    for path in (f"/v1/jobs/{theirs['id']}/cancel", f"/v1/jobs/{theirs['id']}/retry"):
        assert client.post(path, headers=user).status_code == 404
    ids = [j["id"] for j in client.get("/v1/jobs", headers=user).json()["data"]]
    assert ids == [mine["id"]]
    assert client.get("/v1/jobs?project=speech", headers=user).status_code == 403
    assert client.get("/v1/jobs?project=vision", headers=user).status_code == 200
    every = {j["id"] for j in client.get("/v1/jobs", headers=admin).json()["data"]}
    assert every == {mine["id"], theirs["id"]}
    only = client.get("/v1/jobs?project=speech", headers=admin).json()["data"]
    assert [j["id"] for j in only] == [theirs["id"]]
    # a user cannot create into another project; an admin can
    r = client.post("/v1/jobs", headers=user, json={"kind": "search", "project": "speech"})
    assert r.status_code == 403
    r = client.post("/v1/jobs", headers=admin, json={"kind": "search", "project": "speech"})
    assert r.status_code == 201 and r.json()["project"] == "speech"


def test_job_tokens_reach_only_their_own_worker_routes(client, user, claim):
    a = _search(client, user)
    b = _search(client, user)
    (ja, ta), (jb, tb) = claim(2)
    assert {ja, jb} == {a["id"], b["id"]}
    # own routes work
    assert client.post(f"/v1/jobs/{ja}/heartbeat", headers=ta).status_code == 200
    # another job's worker routes: 403
    for route in ("events", "heartbeat", "complete"):
        body = {"events": []} if route == "events" else {"outcome": "failed"}
        r = client.post(f"/v1/jobs/{jb}/{route}", headers=ta, json=body)
        assert r.status_code == 403, (route, r.text)
    # user routes: 403, even for its own job
    for method, path in (
        ("GET", f"/v1/jobs/{ja}"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/me"),
        ("POST", f"/v1/jobs/{ja}/cancel"),
        ("GET", "/v1/architectures"),
    ):
        assert client.request(method, path, headers=ta).status_code == 403, path
    # users (and admins) cannot call worker routes
    r = client.post(
        f"/v1/jobs/{ja}/events",
        headers=user,
        json={"events": [{"seq": 1, "type": "step", "data": {}}]},
    )
    assert r.status_code == 403
    assert client.get(f"/v1/jobs/{ja}", headers=user).json()["progress"] is None


def test_a_cached_job_token_stops_working_when_the_dispatcher_revokes_it(client, app, admin, claim):
    from service.tokens import revoke_job_tokens

    r = client.post("/v1/jobs", headers=admin, json={"kind": "profile", "spec": {}})
    assert r.status_code == 201, r.text
    [(job_id, worker)] = claim(1)
    assert client.get("/v1/me", headers=worker).status_code == 403  # verified (and cached)
    assert client.get("/v1/me", headers=worker).status_code == 403  # from the cache
    with app.state.session_factory() as s:
        revoke_job_tokens(s, job_id)
        s.commit()
    assert client.get("/v1/me", headers=worker).status_code == 401


@pytest.mark.parametrize("ttl", [0.0, 0.3])
def test_a_revocation_by_another_process_is_honoured_within_the_cache_ttl(make_settings, ttl):
    import time

    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from service.app import create_app
    from service.db import make_engine, make_session_factory
    from service.models import utcnow
    from service.tokens import create_token

    app = create_app(make_settings(token_cache_s=ttl))
    with TestClient(app) as c:
        with app.state.session_factory() as s:
            plaintext = create_token(s, "dora", "vision")
            s.commit()
        h = {"Authorization": f"Bearer {plaintext}"}
        assert c.get("/v1/me", headers=h).status_code == 200
        # another process (another API replica) revokes it: nothing here hears about it
        engine = make_engine(app.state.settings.database_url)
        try:
            with make_session_factory(engine)() as s:
                s.execute(
                    update(Token)
                    .where(Token.token_hash == hash_token(plaintext))
                    .values(revoked_at=utcnow())
                )
                s.commit()
        finally:
            engine.dispose()
        if ttl == 0:
            assert c.get("/v1/me", headers=h).status_code == 401
            return
        time.sleep(ttl + 0.05)
        assert c.get("/v1/me", headers=h).status_code == 401

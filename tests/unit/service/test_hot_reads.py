"""The hot read path (service.hotpath + service.reads), the OpenAPI security declaration that
replaced the per-route bearer dependency, and SSE wake-ups on commit (service.signals) — on
SQLite; tests/integration/test_service_pg.py runs the same checks on PostgreSQL."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service import jobs
from service.app import create_app
from service.auth import Principal
from service.hotpath import JobReadFastPath
from service.tokens import create_token
from service_support import (
    FakeExecutor, LiveServer, assert_job_reads_match, first_event_after_post, produce_jobs,
    succeed,
)


def callers(live: LiveServer, mint) -> dict[str, dict[str, str]]:
    """Every kind of caller of ``GET /v1/jobs/{id}`` (``mint`` as in conftest)."""
    jid = live.client(live.admin_token()).post("/v1/jobs", json={"kind": "search"}).json()["id"]
    with live.app.state.session_factory() as s:
        worker = create_token(s, "worker", "default", False, job_id=jid)
        s.commit()
    return {"admin": {"Authorization": f"Bearer {live.admin_token()}"},
            "same project": mint("carol", "default"), "other project": mint("bob", "speech"),
            "job token": {"Authorization": f"Bearer {worker}"}, "anonymous": {},
            "bad token": {"Authorization": "Bearer nope"}}


def test_hot_path_answers_exactly_like_the_fastapi_route(make_settings, mint):
    ex = FakeExecutor(behaviour=succeed)
    with LiveServer(lambda url: make_settings(public_url=url), ex) as live:
        ids = produce_jobs(live)
        who = callers(live, mint)
        plain_app = create_app(make_settings(hot_path=False))
        assert not any(m.cls is JobReadFastPath for m in plain_app.user_middleware)
        with live.client() as hot, TestClient(plain_app) as plain:
            body = hot.get(f"/v1/jobs/{ids[0]}", headers=who["admin"]).json()
            assert body["produced"]["architectures"] and body["status"] == "succeeded"
            assert hot.get(f"/v1/jobs/{ids[1]}", headers=who["admin"]).json()[
                "produced"]["latency_tables"]
            assert_job_reads_match(hot, plain, ids, who)


def test_hot_path_requests_are_counted_under_the_route_template(client, admin):
    jid = client.post("/v1/jobs", json={"kind": "search"}, headers=admin).json()["id"]
    for _ in range(3):
        assert client.get(f"/v1/jobs/{jid}", headers=admin).status_code == 200
    text = client.get("/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith(
        "densenas_http_request_duration_seconds_count") and 'route="/v1/jobs/{job_id}"' in ln
        and 'method="GET"' in ln and 'status="200"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == 3


def test_job_json_matches_the_orm_document(client, admin, app):
    jid = client.post("/v1/jobs", json={"kind": "profile", "spec": {"space": "mbv2-small"}},
                      headers=admin).json()["id"]
    me = Principal(1, "admin", "default", True)
    with app.state.session_factory() as s:
        from service.routes.jobs import one

        expected = one(s, jobs.visible_job(s, me, jid)).model_dump_json()
    # on the app's own event loop, as the hot path runs it
    assert client.portal.call(jobs.job_json, app.state.reader, me, jid) == expected


def test_openapi_declares_bearer_auth_on_every_v1_operation(client):
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            secured = op.get("security") == [{"BearerToken": []}]
            assert secured == path.startswith("/v1/"), (method, path)


def test_a_commit_wakes_the_stream_long_before_its_poll(make_settings):
    # a 30 s poll: only the wake-up on commit can deliver the event in time
    with LiveServer(lambda url: make_settings(public_url=url, sse_poll_s=30)) as live:
        assert first_event_after_post(live, live) < 2.0


def test_reader_compiles_once_and_refuses_statements_it_cannot_compile_once():
    from sqlalchemy import bindparam, create_engine, select

    from service.models import Job
    from service.reads import Reader

    url = "postgresql+psycopg://u:p@127.0.0.1:1/none"  # never connected: compiling only
    reader = Reader(url, create_engine(url))
    stmt = select(Job.id).where(Job.id == bindparam("job_id"))
    assert reader._sql(stmt) is reader._sql(stmt) and "%(job_id)s" in reader._sql(stmt)
    with pytest.raises(ValueError, match="expanding"):
        reader._sql(select(Job.id).where(Job.id.in_(bindparam("ids", expanding=True))))

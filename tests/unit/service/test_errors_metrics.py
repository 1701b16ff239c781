"""Problem+json for the unexpected, Prometheus metrics, the dashboard mount and health."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app


def test_unexpected_errors_are_a_bare_500_problem(make_settings, caplog):
    app = create_app(make_settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "hunter2" not in r.text and "RuntimeError" not in r.text
    assert r.json()["status"] == 500
    assert "hunter2" in caplog.text  # the log has the traceback, the client does not


def test_unknown_route_and_method_are_problems(client, user):
    r = client.get("/v1/nothing-here", headers=user)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = client.put("/v1/jobs", headers=user)
    assert r.status_code == 405 and r.json()["status"] == 405


def test_metrics_expose_jobs_queue_requests_and_events(client, user, claim):
    client.post("/v1/jobs", headers=user, json={"kind": "search"})
    client.post("/v1/jobs", headers=user, json={"kind": "search"})
    [(jid, worker)] = claim()
    client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={
            "events": [
                {"seq": 1, "type": "step", "data": {}},
                {"seq": 1, "type": "step", "data": {}},
            ]
        },
    )
    client.get(f"/v1/jobs/{jid}", headers=user)
    text = client.get("/metrics").text
    assert 'densenas_jobs{status="queued"} 1.0' in text
    assert 'densenas_jobs{status="running"} 1.0' in text
    assert "densenas_queue_depth 1.0" in text
    assert 'densenas_events_ingested_total{result="accepted"} 1.0' in text
    assert 'densenas_events_ingested_total{result="duplicate"} 1.0' in text
    assert 'route="/v1/jobs/{job_id}"' in text  # the template, not /v1/jobs/1
    assert f'route="/v1/jobs/{jid}"' not in text
    assert "densenas_claim_wait_seconds" in text


def test_dashboard_is_mounted_when_present(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


def test_dashboard_pages_get_the_job_statuses_from_the_server(client):
    import html
    import json
    import re

    from service.jobs.states import JobStatus

    for path in ("/", "/jobs/1", "/login"):
        page = client.get(path).text
        blob = re.search(r"<body [^>]*data-job-statuses='([^']*)'", page)[1]
        assert json.loads(html.unescape(blob)) == {
            "statuses": ["queued", "running", "succeeded", "failed", "cancelled"],
            "terminal": ["succeeded", "failed", "cancelled"],
            "retryable": ["failed", "cancelled"],
        }, path
    select = re.search(r'data-testid="filter-status">(.*?)</select>', client.get("/").text, re.S)[1]
    assert re.findall(r"<option>(\w+)</option>", select) == list(JobStatus)


def test_healthz_reports_a_dead_database(make_settings, tmp_path):
    from sqlalchemy import create_engine

    app = create_app(make_settings())
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        live_engine = app.state.engine
        app.state.engine = create_engine(f"sqlite:///{tmp_path}/missing-dir/x.db")
        try:
            r = c.get("/healthz")
        finally:
            app.state.engine.dispose()
            app.state.engine = live_engine
        assert r.status_code == 503 and r.json()["detail"] == "database unreachable"


def test_a_database_out_of_reach_is_a_503_to_retry_on_both_read_paths(
    make_settings, monkeypatch, admin_token
):
    import psycopg
    import sqlalchemy.exc

    from service import jobs

    app = create_app(make_settings())
    headers = {"Authorization": f"Bearer {admin_token}"}

    def lost_orm(*_a, **_k):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))

    async def lost_reader(*_a, **_k):
        raise psycopg.OperationalError("connection refused")

    with TestClient(app, raise_server_exceptions=False) as c:
        jid = c.post("/v1/jobs", json={"kind": "search"}, headers=headers).json()["id"]
        monkeypatch.setattr(jobs, "list_jobs", lost_orm)
        monkeypatch.setattr(jobs, "job_json", lost_reader)
        monkeypatch.setattr("service.auth.resolve_token", lost_orm)
        new_token = {"Authorization": "Bearer dn_never_seen_so_not_cached_0123456789"}
        for path, h in (("/v1/jobs", headers), (f"/v1/jobs/{jid}", headers), ("/v1/me", new_token)):
            r = c.get(path, headers=h)
            assert (r.status_code, r.headers.get("retry-after")) == (503, "1"), (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "retry shortly" in r.json()["detail"]

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
    assert r.status_code == 404 and r.headers["content-type"].startswith(
        "application/problem+json")
    r = client.put("/v1/jobs", headers=user)
    assert r.status_code == 405 and r.json()["status"] == 405


def test_metrics_expose_jobs_queue_requests_and_events(client, user, claim):
    client.post("/v1/jobs", headers=user, json={"kind": "search"})
    client.post("/v1/jobs", headers=user, json={"kind": "search"})
    [(jid, worker)] = claim()
    client.post(f"/v1/jobs/{jid}/events", headers=worker,
                json={"events": [{"seq": 1, "type": "step", "data": {}},
                                 {"seq": 1, "type": "step", "data": {}}]})
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

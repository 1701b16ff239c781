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
from service.schemas import JobPublic, Produced
from tests.support.checks import (
    assert_job_reads_match,
    callers,
    first_event_after_post,
    produce_jobs,
)
from tests.support.docs import latency_table_doc, small_arch_doc
from tests.support.fake_executor import FakeExecutor, succeed
from tests.support.live import LiveServer


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
            assert hot.get(f"/v1/jobs/{ids[1]}", headers=who["admin"]).json()["produced"][
                "latency_tables"
            ]
            assert_job_reads_match(hot, plain, ids, who)


def test_hot_path_requests_are_counted_under_the_route_template(client, admin):
    jid = client.post("/v1/jobs", json={"kind": "search"}, headers=admin).json()["id"]
    for _ in range(3):
        assert client.get(f"/v1/jobs/{jid}", headers=admin).status_code == 200
    text = client.get("/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("densenas_http_request_duration_seconds_count")
        and 'route="/v1/jobs/{job_id}"' in ln
        and 'method="GET"' in ln
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 3


def jobs_in_every_state(client, admin, claim) -> dict[str, int]:
    """{what: job id}: jobs moved through the real API and worker protocol into each state,
    with what each state carries (a result and what it produced, progress, attempt errors)."""

    def post(kind: str = "search", **body) -> int:
        r = client.post("/v1/jobs", json={"kind": kind, **body}, headers=admin)
        return r.raise_for_status().json()["id"]

    def attempt(job_id: int, *reports: tuple[str, dict]) -> None:
        """Claim ``job_id`` (the only runnable job) and post ``reports`` as its worker."""
        [(claimed, worker)] = claim(1)
        assert claimed == job_id
        for path, body in reports:
            client.post(f"/v1/jobs/{job_id}/{path}", json=body, headers=worker).raise_for_status()

    steps = (
        "events",
        {
            "events": [
                {"seq": 0, "type": "step", "data": {"phase": "weights", "epoch": 0, "step": 0}},
                {"seq": 1, "type": "epoch", "data": {"epoch": 0, "val_acc": 0.25}},
            ]
        },
    )
    search_result = {
        "architecture": small_arch_doc("found"),
        "arch_params": {"alpha": [[0.5, 0.5]], "beta": [[1.0]]},
        "metrics": {"val_acc": 0.5},
    }
    out = {"succeeded search": post()}
    attempt(
        out["succeeded search"],
        steps,
        ("complete", {"outcome": "succeeded", "result": search_result}),
    )
    out["succeeded profile"] = post("profile")
    attempt(
        out["succeeded profile"],
        (
            "complete",
            {
                "outcome": "succeeded",
                "result": {"latency_table": latency_table_doc(small_arch_doc())},
            },
        ),
    )
    out["failed"] = post(max_attempts=2)
    for n in (1, 2):
        attempt(
            out["failed"],
            (
                "complete",
                {
                    "outcome": "failed",
                    "error": f"boom {n}",
                    "traceback_tail": f"Traceback\nValueError: {n}",
                },
            ),
        )
    out["running"] = post(priority=5)
    attempt(out["running"], steps)
    client.post(f"/v1/jobs/{out['running']}/cancel", headers=admin).raise_for_status()
    out["cancelled"] = post()
    client.post(f"/v1/jobs/{out['cancelled']}/cancel", headers=admin).raise_for_status()
    out["queued"] = post("profile", spec={"space": "mbv2-small"}, priority=2)
    return out


def orm_document(session, job_id: int) -> JobPublic:
    """``GET /v1/jobs/{id}`` built apart from the code that serves it: the route's response
    model of the ORM row, and what the job produced read from the ORM tables."""
    from sqlalchemy import func, select

    from service.models import Architecture, Job, JobEvent, LatencyTable

    doc = JobPublic.model_validate(session.get(Job, job_id))
    doc.produced = Produced(
        architectures=list(
            session.scalars(
                select(Architecture.id)
                .where(Architecture.job_id == job_id)
                .order_by(Architecture.id)
            )
        ),
        latency_tables=list(
            session.scalars(
                select(LatencyTable.id)
                .where(LatencyTable.job_id == job_id)
                .order_by(LatencyTable.id)
            )
        ),
    )
    doc.last_event_id = session.scalar(
        select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id)
    )
    return doc


def test_the_job_read_is_the_orm_document_in_every_state(client, admin, app, claim):
    ids = jobs_in_every_state(client, admin, claim)
    me = Principal(1, "admin", "default", True)
    with app.state.session_factory() as s:
        from service.routes.jobs import one

        for what, jid in ids.items():
            expected = orm_document(s, jid)
            hot = client.get(f"/v1/jobs/{jid}", headers=admin)  # the hot path
            assert hot.status_code == 200, what
            assert hot.json() == expected.model_dump(mode="json"), what
            assert hot.content == expected.model_dump_json().encode(), what
            # the same read on the app's own event loop, and the ORM routes' document (the
            # answer of create, cancel, retry and complete)
            assert (
                client.portal.call(jobs.job_json, app.state.reader, me, jid) == hot.content.decode()
            ), what
            assert one(s, jobs.visible_job(s, me, jid)) == expected, what
    docs = {what: client.get(f"/v1/jobs/{jid}", headers=admin).json() for what, jid in ids.items()}
    # each state carries what the comparison is meant to cover
    assert {what: d["status"] for what, d in docs.items()} == {
        "succeeded search": "succeeded",
        "succeeded profile": "succeeded",
        "failed": "failed",
        "running": "running",
        "cancelled": "cancelled",
        "queued": "queued",
    }
    assert (
        docs["succeeded search"]["result"] and docs["succeeded search"]["produced"]["architectures"]
    )
    assert docs["succeeded profile"]["produced"]["latency_tables"]
    assert [e["error"] for e in docs["failed"]["attempt_errors"]] == ["boom 1", "boom 2"]
    assert docs["failed"]["attempt_errors"][1]["traceback_tail"].endswith("ValueError: 2")
    running = docs["running"]
    assert running["progress"]["step"]["step"] == 0 and running["progress"]["epoch"]
    assert running["cancel_requested"] and running["started_at"] and running["last_event_id"]
    assert docs["queued"]["last_event_id"] and not docs["queued"]["started_at"]


def test_openapi_declares_bearer_auth_on_every_v1_operation(client):
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            secured = op.get("security") == [{"BearerToken": []}]
            assert secured == path.startswith("/v1/"), (method, path)


@pytest.mark.flaky(reruns=2, reruns_delay=2)  # a wake-up within 2 s, timed on shared cores
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

"""DenseNASClient without a server: problem+json errors, SSE parsing and resume, configuration."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from service import client as client_mod
from service.client import ApiError, DenseNASClient, iter_sse


def make(handler) -> DenseNASClient:
    return DenseNASClient("http://test", "tok", transport=httpx.MockTransport(handler))


def test_bearer_token_and_json_roundtrip() -> None:
    seen = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen["auth"] = req.headers.get("authorization")
        seen["idem"] = req.headers.get("idempotency-key")
        seen["body"] = json.loads(req.content)
        return httpx.Response(201, json={"id": 7, "status": "queued"})

    job = make(handler).create_job("search", {"epochs": 2}, priority=3, idempotency_key="k1")
    assert job == {"id": 7, "status": "queued"}
    assert seen == {
        "auth": "Bearer tok",
        "idem": "k1",
        "body": {"kind": "search", "spec": {"epochs": 2}, "priority": 3},
    }


def test_list_drops_unset_filters() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert dict(req.url.params) == {"status": "running", "limit": "5"}
        return httpx.Response(200, json={"data": [], "next_cursor": None})

    assert make(handler).list_jobs(status="running", limit=5)["data"] == []


def test_problem_json_becomes_api_error() -> None:
    problem = {
        "type": "https://densenas.dev/problems/validation",
        "title": "Unprocessable",
        "status": 422,
        "detail": "spec.epochs: must be >= 1",
        "errors": [{"field": "spec.epochs", "message": "must be >= 1"}],
    }

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422, json=problem, headers={"content-type": "application/problem+json"}
        )

    with pytest.raises(ApiError) as ei:
        make(handler).create_job("search", {"epochs": 0})
    e = ei.value
    assert (e.status, e.title, e.detail) == (422, "Unprocessable", "spec.epochs: must be >= 1")
    assert e.errors == problem["errors"]
    assert "422" in str(e) and "spec.epochs" in str(e)


def test_non_json_error_body() -> None:
    with pytest.raises(ApiError) as ei:
        make(lambda req: httpx.Response(502, text="bad gateway")).get_job(1)
    assert ei.value.status == 502 and ei.value.detail == "bad gateway"


def test_iter_sse_parses_fields_comments_and_multiline_data() -> None:
    lines = [
        ": ping",
        "id: 1",
        "event: step",
        'data: {"epoch": 0,',
        'data: "loss": 2.5}',
        "",
        "retry: 1000",
        "id: 2",
        "data: plain text",
        "",
        "data: no-dispatch-without-blank",
    ]
    events = list(iter_sse(iter(lines)))
    assert len(events) == 2
    assert (events[0].id, events[0].type, events[0].data) == (
        "1",
        "step",
        {"epoch": 0, "loss": 2.5},
    )
    assert (events[1].id, events[1].event, events[1].data) == ("2", "message", "plain text")


def test_event_row_payload_is_unwrapped() -> None:
    (ev,) = iter_sse(
        iter(["id: 5", 'data: {"id": 5, "seq": 3, "type": "epoch", "data": {"epoch": 1}}', ""])
    )
    assert ev.type == "epoch" and ev.payload == {"epoch": 1}


def test_stream_events_resumes_with_last_event_id_until_terminal() -> None:
    calls: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/events"):
            last = req.headers.get("last-event-id")
            calls.append(last)
            if last is None:  # first connection: two events, then the server drops it
                body = (
                    'id: 1\nevent: step\ndata: {"step": 1}\n\nid: 2\nevent: step\n'
                    'data: {"step": 2}\n\n'
                )
            else:
                assert last == "2"
                body = 'id: 3\nevent: status\ndata: {"status": "succeeded"}\n\n'
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        status = "running" if len(calls) < 2 else "succeeded"
        return httpx.Response(200, json={"id": 1, "status": status})

    c = make(handler)
    events = list(c.stream_events(1, backoff=0))
    assert [e.id for e in events] == ["1", "2", "3"]
    assert calls == [None, "2"]


def test_stream_events_after_sets_last_event_id() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/events"):
            assert req.headers["last-event-id"] == "41"
            return httpx.Response(200, text="id: 42\ndata: {}\n\n")
        return httpx.Response(200, json={"id": 1, "status": "failed"})

    assert [e.id for e in make(handler).stream_events(1, after=41)] == ["42"]


def test_stream_events_http_error_is_api_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json={"title": "Not Found", "status": 404, "detail": "job 9 not found"}
        )

    with pytest.raises(ApiError) as ei:
        list(make(handler).stream_events(9))
    assert ei.value.status == 404


def test_from_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_home = tmp_path / "cfg"
    (cfg_home / "densenas").mkdir(parents=True)
    (cfg_home / "densenas" / "config.toml").write_text(
        'url = "http://from-file:9000"\ntoken = "file-token"\n'
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "admin_token").write_text("bootstrap-token\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg_home))
    monkeypatch.setenv("DENSENAS_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DENSENAS_URL", raising=False)
    monkeypatch.delenv("DENSENAS_TOKEN", raising=False)

    c = DenseNASClient.from_env()
    assert (c.base_url, c.token) == ("http://from-file:9000", "file-token")

    monkeypatch.setenv("DENSENAS_URL", "http://env:1")
    monkeypatch.setenv("DENSENAS_TOKEN", "env-token")
    c = DenseNASClient.from_env()
    assert (c.base_url, c.token) == ("http://env:1", "env-token")

    monkeypatch.delenv("DENSENAS_URL")
    monkeypatch.delenv("DENSENAS_TOKEN")
    (cfg_home / "densenas" / "config.toml").unlink()
    c = DenseNASClient.from_env()
    assert (c.base_url, c.token) == (client_mod.DEFAULT_URL, "bootstrap-token")
    assert client_mod.bootstrap_token_path() == data_dir / "admin_token"


def test_repeatable_requests_retry_503_and_429_honouring_retry_after():
    calls: list[tuple[str, str]] = []
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "1"}, json={"title": "x"}),
            httpx.Response(429, json={"title": "slow down"}),
            httpx.Response(200, json={"id": 7, "status": "queued"}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        return next(answers)

    slept: list[float] = []
    c = DenseNASClient(
        "http://test", "tok", transport=httpx.MockTransport(handler), sleep=slept.append
    )
    assert c.get_job(7)["status"] == "queued"
    assert len(calls) == 3 and slept == [1.0, 1.0]  # Retry-After, then 0.5 s doubled


def test_non_repeatable_requests_and_exhausted_retries_raise_the_problem():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(
            503, json={"title": "Service Unavailable", "detail": "the database is unavailable"}
        )

    c = DenseNASClient(
        "http://test",
        "tok",
        transport=httpx.MockTransport(handler),
        retries=2,
        sleep=lambda s: None,
    )
    with pytest.raises(ApiError) as e:
        c.cancel_job(1)  # a POST without an Idempotency-Key: not repeated
    assert e.value.status == 503 and calls == ["POST"]
    with pytest.raises(ApiError, match="database is unavailable"):
        c.get_job(1)
    assert calls == ["POST", "GET", "GET", "GET"]
    calls.clear()
    with pytest.raises(ApiError):
        c.create_job("search", {}, idempotency_key="k1")
    assert calls == ["POST"] * 3

"""Checks of the hot read path and of stream wake-ups that run alike on SQLite
(tests/unit/service/test_hot_reads.py) and on PostgreSQL (tests/integration/test_service_pg.py),
with the callers and jobs they run on."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import httpx

from service import jobs
from service.tokens import create_token

from .live import LiveServer
from .waiting import wait_status


def callers(live: LiveServer, mint) -> dict[str, dict[str, str]]:
    """Every kind of caller of ``GET /v1/jobs/{id}`` → its headers. ``mint(name, project)``
    returns the headers of a fresh token (the ``mint`` fixture of tests/unit/service)."""
    jid = live.client(live.admin_token()).post("/v1/jobs", json={"kind": "search"}).json()["id"]
    with live.app.state.session_factory() as s:
        worker = create_token(s, "worker", "default", False, job_id=jid)
        s.commit()
    return {
        "admin": {"Authorization": f"Bearer {live.admin_token()}"},
        "same project": mint("carol", "default"),
        "other project": mint("bob", "speech"),
        "job token": {"Authorization": f"Bearer {worker}"},
        "anonymous": {},
        "bad token": {"Authorization": "Bearer nope"},
    }


def produce_jobs(live: LiveServer) -> list[int]:
    """A succeeded search (an architecture), a succeeded profile (a latency table) and a
    queued job, through the live server's dispatcher (its executor must run ``succeed``)."""
    c = live.client(live.admin_token())
    done = [
        wait_status(
            c, c.post("/v1/jobs", json={"kind": kind}).json()["id"], {"succeeded", "failed"}
        )
        for kind in ("search", "profile")
    ]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    live.dispatcher.stop()
    queued = c.post("/v1/jobs", json={"kind": "search", "priority": 3}).json()
    return [d["id"] for d in done] + [queued["id"]]


def assert_job_reads_match(
    hot: Any, plain: Any, job_ids: list[int], callers: dict[str, dict[str, str]]
) -> None:
    """``GET /v1/jobs/...`` answers alike — status, content type, bytes — from an app with
    the hot path (``hot``) and one without (``plain``), for every caller and id shape."""
    paths = [f"/v1/jobs/{i}" for i in job_ids] + [
        f"/v1/jobs/{job_ids[0]}?unused=1",
        f"/v1/jobs/00{job_ids[0]}",
        "/v1/jobs/987654",
        "/v1/jobs/0",
        "/v1/jobs/abc",
        "/v1/jobs/-1",
        "/v1/jobs/99999999999999999999",
    ]
    seen = set()
    for who, headers in callers.items():
        for path in paths:
            a, b = hot.get(path, headers=headers), plain.get(path, headers=headers)
            assert (a.status_code, a.headers.get("content-type"), a.content) == (
                b.status_code,
                b.headers.get("content-type"),
                b.content,
            ), (who, path)
            seen.add(a.status_code)
    assert {200, 401, 403, 404, 422} <= seen, seen


def first_event_after_post(
    stream_from: LiveServer, post_to: LiveServer, timeout: float = 20.0
) -> float:
    """Seconds from a worker's ``POST /events`` (to ``post_to``) until an SSE client of
    ``stream_from`` receives that event."""
    admin = stream_from.client(stream_from.admin_token())
    admin.post("/v1/jobs", json={"kind": "search"}).raise_for_status()
    with post_to.app.state.session_factory() as s:
        [(job, token)] = jobs.claim(s, "signals-test", 1)
    jid = job.id
    arrived: list[float] = []
    opened = threading.Event()

    def listen() -> None:
        with (
            contextlib.suppress(httpx.ReadTimeout),
            admin.stream("GET", f"/v1/jobs/{jid}/events", timeout=httpx.Timeout(timeout)) as r,
        ):
            for line in r.iter_lines():
                opened.set()
                if line.startswith("data:") and '"marker"' in line:
                    arrived.append(time.perf_counter())
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(timeout), "the stream sent nothing"
    time.sleep(0.5)  # the stream has read what exists and is waiting
    sent = time.perf_counter()
    r = post_to.client(token).post(
        f"/v1/jobs/{jid}/events",
        json={"events": [{"seq": 0, "type": "log", "data": {"marker": True}}]},
    )
    assert r.status_code == 200, r.text
    t.join(timeout)
    assert arrived, "the event never arrived"
    return arrived[0] - sent

"""The SSE event stream over a real uvicorn server and httpx streaming: live delivery, the
closing ``end`` event, and resumption from Last-Event-ID / ?after= without loss or repeats."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from service import jobs
from tests.support.live import LiveServer

# Streams over a live server, read from a thread against wall-clock deadlines.
pytestmark = [pytest.mark.flaky(reruns=2, reruns_delay=2)]


def parse_sse(lines):
    """Yield (id, event, data) per dispatched SSE message (comments/pings skipped)."""
    ev_id, ev_type, data = None, "message", []
    for line in lines:
        if line == "":
            if data:
                yield ev_id, ev_type, json.loads("\n".join(data))
            ev_id, ev_type, data = None, "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                ev_id = value
            elif name == "event":
                ev_type = value
            elif name == "data":
                data.append(value)


@pytest.fixture
def live(make_settings):
    with LiveServer(lambda url: make_settings(public_url=url)) as server:
        yield server


def test_stream_delivers_live_events_then_ends_and_resumes(live):
    admin = live.client(live.admin_token())
    job = admin.post("/v1/jobs", json={"kind": "search"}).json()
    jid = job["id"]
    with live.app.state.session_factory() as s:
        [(claimed, token)] = jobs.claim(s, "sse-test", 1)
    worker = live.client(token)

    received: list[tuple[str | None, str, dict]] = []
    errors: list[BaseException] = []
    first_two = threading.Event()

    def reader() -> None:
        try:
            with admin.stream(
                "GET",
                f"/v1/jobs/{jid}/events",
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(30),
            ) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                for msg in parse_sse(r.iter_lines()):
                    received.append(msg)
                    if len(received) >= 2:
                        first_two.set()
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    assert first_two.wait(20), "no live events"  # created + claimed transitions
    for i in range(5):  # written while the client is connected
        r = worker.post(
            f"/v1/jobs/{jid}/events",
            json={"events": [{"seq": i, "type": "step", "data": {"step": i}}]},
        )
        assert r.status_code == 200
        time.sleep(0.02)
    r = worker.post(f"/v1/jobs/{jid}/complete", json={"outcome": "failed", "error": "x"})
    assert r.json()["status"] in ("queued", "failed")
    admin.post(f"/v1/jobs/{jid}/cancel")  # terminal either way (queued → cancelled)
    t.join(30)
    assert not t.is_alive(), "stream did not end after the job became terminal"
    assert not errors, errors

    *events, end = received
    assert end[1] == "end" and end[2]["status"] in ("failed", "cancelled")
    ids = [int(e[0]) for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    steps = [e[2]["data"]["step"] for e in events if e[1] == "step"]
    assert steps == [0, 1, 2, 3, 4]
    assert all(e[2]["id"] == int(e[0]) and e[2]["type"] == e[1] for e in events)
    transitions = [(e[2]["data"]["from"], e[2]["data"]["to"]) for e in events if e[1] == "status"]
    assert transitions[:2] == [(None, "queued"), ("queued", "running")]

    # resume after the third event: exactly the rest, no repeats
    cut = ids[2]
    for headers, query in (({"Last-Event-ID": str(cut)}, ""), ({}, f"?after={cut}")):
        with admin.stream("GET", f"/v1/jobs/{jid}/events{query}", headers=headers) as r:
            resumed = list(parse_sse(r.iter_lines()))
        assert [int(e[0]) for e in resumed[:-1]] == ids[3:]
        assert resumed[-1][1] == "end"
    # JSON view of the same log, paged
    page = admin.get(
        f"/v1/jobs/{jid}/events",
        params={"after": cut, "limit": 2},
        headers={"Accept": "application/json"},
    ).json()
    assert [e["id"] for e in page["data"]] == ids[3:5] and page["next_after"] == ids[4]


def test_stream_sends_keepalive_pings_while_idle(make_settings):
    with LiveServer(lambda url: make_settings(public_url=url, sse_ping_s=0.2)) as live:
        admin = live.client(live.admin_token())
        jid = admin.post("/v1/jobs", json={"kind": "search"}).json()["id"]
        lines: list[str] = []
        with admin.stream("GET", f"/v1/jobs/{jid}/events") as r:
            started = time.monotonic()
            for line in r.iter_lines():
                lines.append(line)
                if sum(1 for x in lines if x.startswith(":")) >= 2:
                    break
                assert time.monotonic() - started < 15, lines
        assert any(x.startswith("id: ") for x in lines)


def test_bad_last_event_id_is_422(live):
    admin = live.client(live.admin_token())
    jid = admin.post("/v1/jobs", json={"kind": "search"}).json()["id"]
    r = admin.get(f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "Last-Event-ID"


def test_last_event_id_on_the_job_is_where_a_live_view_starts(client, admin, claim):
    jid = client.post("/v1/jobs", json={"kind": "search"}, headers=admin).json()["id"]
    [(_, worker)] = claim(1)
    events = client.get(f"/v1/jobs/{jid}/events?format=json", headers=admin).json()["data"]
    job = client.get(f"/v1/jobs/{jid}", headers=admin).json()
    assert job["last_event_id"] == events[-1]["id"]  # the claim's status event
    listed = client.get("/v1/jobs", headers=admin).json()["data"]
    assert [j["last_event_id"] for j in listed if j["id"] == jid] == [events[-1]["id"]]
    r = client.post(
        f"/v1/jobs/{jid}/events",
        headers=worker,
        json={"events": [{"seq": 7, "type": "log", "data": {"message": "new"}}]},
    )
    assert r.status_code == 200
    after = client.get(
        f"/v1/jobs/{jid}/events?format=json",
        headers={**admin, "Last-Event-ID": str(job["last_event_id"])},
    ).json()
    assert [e["seq"] for e in after["data"]] == [7]
    fresh = client.post("/v1/jobs", json={"kind": "search"}, headers=admin).json()
    assert fresh["last_event_id"] is not None  # its "queued" transition


def test_one_stream_follows_many_jobs_each_from_its_own_cursor(live):
    admin = live.client(live.admin_token())
    a, b, done = (admin.post("/v1/jobs", json={"kind": "search"}).json()["id"] for _ in range(3))
    with live.app.state.session_factory() as s:
        claimed = {job.id: token for job, token in jobs.claim(s, "sse-test", 3)}
    workers = {j: live.client(t) for j, t in claimed.items()}
    assert (
        workers[done]
        .post(f"/v1/jobs/{done}/complete", json={"outcome": "failed", "error": "x"})
        .status_code
        == 200
    )
    admin.post(f"/v1/jobs/{done}/cancel")  # terminal either way
    b_cursor = admin.get(f"/v1/jobs/{b}").json()["last_event_id"]

    received: list[tuple[str | None, str, dict]] = []
    opened = threading.Event()

    def reader() -> None:
        with admin.stream(
            "GET",
            "/v1/events",
            params={"jobs": f"{a},{b}:{b_cursor},{done}"},
            timeout=httpx.Timeout(30),
        ) as r:
            assert r.status_code == 200
            for msg in parse_sse(r.iter_lines()):
                received.append(msg)
                opened.set()

    t = threading.Thread(target=reader)
    t.start()
    assert opened.wait(20)
    for i in range(3):
        for j in (a, b):
            assert (
                workers[j]
                .post(
                    f"/v1/jobs/{j}/events",
                    json={"events": [{"seq": i, "type": "step", "data": {"step": i, "job": j}}]},
                )
                .status_code
                == 200
            )
    for j in (a, b):
        workers[j].post(f"/v1/jobs/{j}/complete", json={"outcome": "failed", "error": "x"})
        admin.post(f"/v1/jobs/{j}/cancel")
    t.join(30)
    assert not t.is_alive(), "the stream did not close after every job ended"

    ends = [m[2]["job_id"] for m in received if m[1] == "end"]
    assert sorted(ends) == sorted([a, b, done]) and received[-1][1] == "end"
    assert ends.index(done) == 0  # already terminal: ended first
    by_job: dict[int, list[dict]] = {}
    for ev_id, _type, data in received:
        if ev_id is not None:
            by_job.setdefault(data["job_id"], []).append(data)
    for j in (a, b):
        ids = [e["id"] for e in by_job[j]]
        assert ids == sorted(set(ids))
        assert [e["data"]["step"] for e in by_job[j] if e["type"] == "step"] == [0, 1, 2]
    statuses_a = [e["data"]["to"] for e in by_job[a] if e["type"] == "status"]
    assert statuses_a[:2] == ["queued", "running"]  # a: from the start
    assert all(e["id"] > b_cursor for e in by_job[b])  # b: only after its cursor


def test_many_job_stream_rejects_bad_lists_and_hides_foreign_jobs(client, admin, user, other):
    mine = client.post("/v1/jobs", json={"kind": "search"}, headers=user).json()["id"]
    for bad in ("abc", "1,,2", "1:x", ",".join(str(i) for i in range(1, 102))):
        r = client.get("/v1/events", params={"jobs": bad}, headers=admin)
        assert r.status_code == 422 and "jobs" in r.text, (bad, r.text)
    r = client.get("/v1/events", params={"jobs": f"{mine}"}, headers=other)
    assert r.status_code == 404 and f"job {mine} not found" in r.text
    assert client.get("/v1/events", params={"jobs": "1"}).status_code == 401

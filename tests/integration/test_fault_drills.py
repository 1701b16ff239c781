"""Fault drills against the real `densenas serve` process (issue: measured robustness).

* The control plane is SIGKILLed while jobs run; after a restart no row is lost, the orphaned job
  is reconciled (retried from its checkpoint) and every job finishes.
* PostgreSQL is restarted under load; the service recovers on its own (pool pre-ping), with no
  job left stuck.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.serve import SPEC, TERMINAL, Server, wait

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("jobs", "job_events", "architectures", "tokens")
        }


def test_control_plane_killed_mid_job_loses_nothing_and_reconciles(tmp_path: Path) -> None:
    db = tmp_path / "drill.db"
    server = Server(tmp_path, f"sqlite:///{db}")
    server.start()
    try:
        with server.client() as c:
            ids = [
                c.post("/v1/jobs", json={"kind": "search", "spec": SPEC}).json()["id"]
                for _ in range(2)
            ]
            # kill once the first job is running and has reported progress
            wait(
                lambda: (
                    c.get(f"/v1/jobs/{ids[0]}").json()["status"] == "running"
                    and len(c.get(f"/v1/jobs/{ids[0]}/events?format=json").json()["data"]) >= 4
                ),
                240,
                "first job to report progress",
            )
        before = _counts(db)
        server.kill()
        after_kill = _counts(db)
        assert after_kill["jobs"] == before["jobs"] == 2
        assert after_kill["job_events"] >= before["job_events"]

        server.start()  # same database, same data dir: reconcile on start
        with server.client() as c:
            final = wait(
                lambda: (
                    [
                        j
                        for j in (c.get(f"/v1/jobs/{i}").json() for i in ids)
                        if j["status"] in TERMINAL
                    ]
                    if all(c.get(f"/v1/jobs/{i}").json()["status"] in TERMINAL for i in ids)
                    else None
                ),
                480,
                "both jobs to finish after the restart",
            )
            assert [j["status"] for j in final] == ["succeeded", "succeeded"], final
            first = c.get(f"/v1/jobs/{ids[0]}").json()
            assert first["attempt"] >= 2, "the orphaned job was not reconciled"
            events = c.get(f"/v1/jobs/{ids[0]}/events?format=json").json()["data"]
            seqs = [e["seq"] for e in events if e.get("seq") is not None]
            assert len(seqs) == len(set(seqs)), "duplicate worker events after the restart"
            for i in ids:
                arch_id = c.get(f"/v1/jobs/{i}").json()["result"]["architecture_id"]
                assert c.get(f"/v1/architectures/{arch_id}").status_code == 200
        end = _counts(db)
        assert end["jobs"] == 2 and end["architectures"] == 2
        assert end["job_events"] >= after_kill["job_events"]
        assert end["tokens"] >= before["tokens"]
    finally:
        server.stop()


def _pg_restart() -> None:
    ver, name = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", ver, name, "restart"],
        check=True,
        timeout=120,
    )


def test_service_recovers_when_postgres_restarts_under_load(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    base = pg_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"drill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    server = Server(tmp_path, url)
    server.start()
    stop = threading.Event()
    outcomes: list[tuple[float, int]] = []
    failures: list[str] = []

    def load(path: str) -> None:
        with server.client() as c:
            while not stop.is_set():
                try:
                    code = c.get(path).status_code
                except httpx.HTTPError as e:
                    code = 0
                    failures.append(f"{path}: {e!r}")
                outcomes.append((time.monotonic(), code))
                time.sleep(0.02)

    try:
        with server.client() as c:
            running = c.post("/v1/jobs", json={"kind": "search", "spec": SPEC}).json()["id"]
            wait(
                lambda: c.get(f"/v1/jobs/{running}").json()["status"] == "running",
                120,
                "job to start",
            )
            # a page through the ORM, a job through the hot read path (service.reads)
            loaders = [
                threading.Thread(target=load, args=(path,), daemon=True)
                for path in ("/v1/jobs?limit=5", f"/v1/jobs/{running}")
            ]
            for t in loaders:
                t.start()
            time.sleep(1.0)
            restarted_at = time.monotonic()
            _pg_restart()
            subprocess.run(["pg_isready", "-h", "127.0.0.1", "-t", "30"], check=True)
            # the service must answer again by itself (no restart of the API process)
            wait(
                lambda: (
                    any(ts > restarted_at and code == 200 for ts, code in outcomes[-20:])
                    and outcomes[-1][1] == 200
                ),
                60,
                "requests to succeed again",
            )
            stop.set()
            for t in loaders:
                t.join(10)
            assert server.proc.poll() is None, "the API process died with the database"
            assert not any(code >= 500 for ts, code in outcomes if ts < restarted_at), (
                "errors before the restart"
            )
            # while the database was away: 503 (retry shortly), never a bare 500
            assert {code for _ts, code in outcomes} <= {200, 503}, (
                sorted({code for _ts, code in outcomes}),
                failures[:5],
            )
            # nothing stuck: the job running across the restart and a new one both finish
            fresh = c.post("/v1/jobs", json={"kind": "search", "spec": SPEC}).json()["id"]
            for jid in (running, fresh):
                status = wait(
                    lambda jid=jid: (
                        (s := c.get(f"/v1/jobs/{jid}").json()["status"]) in TERMINAL and s
                    ),
                    480,
                    f"job {jid} to finish",
                )
                assert status == "succeeded", c.get(f"/v1/jobs/{jid}").json()
            assert c.get("/healthz").status_code == 200
    finally:
        stop.set()
        server.stop()
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

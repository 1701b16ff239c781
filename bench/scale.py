"""Scale: thousands of jobs through the real control plane, N API processes, a simulated fleet.

Set-up (issue 16): a fresh PostgreSQL database (``scripts/pg_start.sh``), N API processes —
each this module's ``serve`` entry point: the real ``service.app.create_app`` under uvicorn,
exactly like ``densenas serve``, but with :class:`FleetExecutor` injected as its executor —
and a simulated worker fleet in this process that speaks the real worker HTTP protocol
(``POST /v1/jobs/{id}/events|heartbeat|complete`` with each job's token). Everything listens
on and connects to 127.0.0.1 only.

:class:`FleetExecutor` is the only simulated part: ``start(payload)`` appends the launch
payload's job id, attempt, token and API URL to a spool file that the fleet reads (what a job
actor would receive); ``alive``/``alive_many`` say every started job is alive (the fleet never
loses a worker); ``capacity`` is a 100-node cluster (``FLEET_CPUS``), so the dispatcher takes
the resource-planning path of a Ray deployment.

For each job count and each N, phases:

1. **claim**: ``jobs`` queued jobs inserted in one transaction (queue depth = ``jobs``), the N
   dispatchers claim them; claim throughput overall and per API process (claims ÷ that
   process's claim span; claims ÷ its CPU seconds), and submit → claim latency (``started_at
   − created_at``) at that depth;
2. **ingest**: the fleet posts event batches (``batch`` events, ``dup_fraction`` of the
   batches re-sent: duplicates) and heartbeats for the running jobs, each to the API process
   that claimed the job, for ``ingest_s``; events/s overall and per API process, POST latency
   p50/p99, and a check that the database holds exactly the unique events sent and that the
   server counted every duplicate;
3. **SSE fan-out**: ``watchers`` SSE clients (spread over the N processes) follow one job while
   the fleet posts ``sse_events`` events to it; post → delivery latency, and every watcher must
   see every event;
4. **page**: ``GET /v1/jobs?limit=50`` (first page, a cursor page, ``status=running``);
5. **database size** per job (and per stored event);
6. **reconcile** (largest N only): all API processes stopped, one restarted; its dispatcher
   reconciles every running job (``alive_many``: one answer for all), timed by the
   dispatcher's own log line; the per-job path (``FleetExecutor`` without ``alive_many`` —
   what every executor did before) timed the same way;
7. **complete**: the fleet ends ``complete_n`` jobs (``failed``, no retry); completes/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .service_load import _free_port, _pg_url, _postgres_cpu_s, _proc_cpu_s
from .service_load import fresh_database as _fresh_database
from .timing import load_snapshot, quantile, shared_note

TITLE = "Scale: 10,000 jobs, N API processes, simulated fleet (PostgreSQL, loopback)"
ROOT = Path(__file__).resolve().parents[1]
#: A 100-node cluster of 128-CPU nodes: every job of the run fits (one CPU per Train worker).
FLEET_CPUS = 100 * 128
GOALS = {"claim_per_proc_s": 200, "ingest_eps_per_proc": 10_000, "reconcile_10k_s": 10.0}
FULL = {
    "sizes": [1000, 10_000],
    "procs": [1, 2, 4],
    "ingest_s": 8,
    "batch": 32,
    "concurrency": 32,
    "heartbeat_every": 4,
    "dup_fraction": 0.1,
    "watchers": 100,
    "sse_events": 20,
    "page_n": 40,
    "complete_n": 500,
    "reconcile_before_max": 10_000,
}
QUICK = {
    "sizes": [200],
    "procs": [1, 2],
    "ingest_s": 2,
    "batch": 32,
    "concurrency": 8,
    "heartbeat_every": 4,
    "dup_fraction": 0.1,
    "watchers": 10,
    "sse_events": 5,
    "page_n": 10,
    "complete_n": 50,
    "reconcile_before_max": 200,
}
SPEC = {
    "space": "mbv2-small",
    "dataset": {"name": "synthetic", "limit_train": 64, "limit_val": 16},
    "epochs": 1,
    "warmup_epochs": 0,
}


def run_async(coro: Any) -> Any:
    """``asyncio.run(coro)``, in a thread of its own when this thread already runs an event
    loop (the test suite's session-wide Playwright keeps one running in the main thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-scale-async")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _log(msg: str) -> None:
    print(f"   [scale] {msg}", flush=True)


def _ms(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50_ms": round(quantile(xs, 0.5), 2),
        "p99_ms": round(quantile(xs, 0.99), 2),
        "max_ms": round(max(xs), 2),
        "mean_ms": round(statistics.mean(xs), 2),
    }


@contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    """:func:`bench.service_load.fresh_database`, whose drop is retried: ``DROP DATABASE ...
    WITH (FORCE)`` is refused while an autovacuum worker (the superuser's) is in it — after
    thousands of jobs' rows, often."""
    import psycopg
    from sqlalchemy.engine import make_url

    cm = _fresh_database(base_url)
    url = cm.__enter__()
    try:
        yield url
    finally:
        try:
            cm.__exit__(None, None, None)
        except psycopg.errors.InsufficientPrivilege:
            u, name = make_url(base_url), make_url(url).database
            conninfo = dict(
                host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database
            )
            for attempt in range(30):
                time.sleep(2)
                try:
                    with psycopg.connect(**conninfo, autocommit=True) as c:
                        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except psycopg.errors.InsufficientPrivilege:
                    if attempt == 29:
                        raise


# -- the served process ------------------------------------------------------------------------


class FleetExecutor:
    """The served process's executor: hands each launch payload to the simulated fleet
    through a spool file (see the module docstring)."""

    def __init__(self, spool: str, cpus: float = FLEET_CPUS) -> None:
        self._file = open(spool, "a", buffering=1)  # noqa: SIM115 - closed by shutdown
        self._lock = threading.Lock()
        self._cpus = cpus

    def start(self, payload: Any) -> None:
        line = json.dumps(
            {
                "job_id": payload.job_id,
                "attempt": payload.attempt,
                "token": payload.job_token,
                "api_url": payload.api_url,
            }
        )
        with self._lock:
            self._file.write(line + "\n")

    def alive(self, job_id: int) -> bool:
        return True

    def alive_many(self, job_ids: Any) -> set[int]:
        return {int(i) for i in job_ids}

    def capacity(self) -> dict[str, float]:
        return {"CPU": float(self._cpus), "GPU": 0.0}

    def cancel(self, job_id: int) -> None:
        pass

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


class PerJobFleetExecutor(FleetExecutor):
    """The same fleet, asked about one job at a time (an executor without ``alive_many``)."""

    alive_many = None  # type: ignore[assignment]


def serve_main() -> None:
    """``python -m bench.scale serve``: the real app under uvicorn with a FleetExecutor."""
    import logging

    import uvicorn

    from service.app import create_app
    from service.server import Server
    from service.settings import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("service.dispatcher").setLevel(logging.INFO)  # the reconcile line
    cls = PerJobFleetExecutor if os.environ.get("BENCH_PER_JOB") == "1" else FleetExecutor
    app = create_app(settings, cls(os.environ["BENCH_SPOOL"]))
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        workers=1,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    Server(config, app).run()


class ApiProc:
    """One served API process (subprocess) of the run."""

    def __init__(self, db_url: str, admin: str, workdir: Path, idx: int, **env: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = workdir / f"spool-{idx}-{self.port}.jsonl"
        self.logpath = workdir / f"server-{idx}-{self.port}.log"
        self.env = {
            **os.environ,
            "DENSENAS_DATABASE_URL": db_url,
            "DENSENAS_EXECUTOR": "none",
            "DENSENAS_PORT": str(self.port),
            "DENSENAS_PUBLIC_URL": self.url,
            "DENSENAS_DATA_DIR": str(workdir / f"data-{idx}"),
            "DENSENAS_ADMIN_TOKEN": admin,
            "DENSENAS_LOG_LEVEL": "warning",
            "BENCH_SPOOL": str(self.spool),
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> None:
        import httpx

        log = open(self.logpath, "a")  # noqa: SIM115 - the child holds it
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scale", "serve"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.logpath.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 120 s")
            time.sleep(0.2)

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def reconcile_line(self) -> dict[str, Any] | None:
        found = re.findall(
            r"reconciled (\d+) running job\(s\) in ([\d.]+) s", self.logpath.read_text()
        )
        return {"jobs": int(found[-1][0]), "s": float(found[-1][1])} if found else None


@contextmanager
def api_procs(db_url: str, admin: str, workdir: Path, n: int, **env: str) -> Iterator[list]:
    procs = [ApiProc(db_url, admin, workdir, i, **env) for i in range(n)]
    try:
        procs[0].start()  # the first runs the migrations; the others find the schema at head
        for p in procs[1:]:
            p.env["DENSENAS_RUN_MIGRATIONS"] = "false"
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


# -- the fleet ---------------------------------------------------------------------------------


def read_spools(procs: list[ApiProc]) -> dict[int, dict[str, Any]]:
    """The launch payloads the API processes handed out: {job id: the latest attempt's}."""
    out: dict[int, dict[str, Any]] = {}
    for p in procs:
        if p.spool.exists():
            for line in p.spool.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    out[d["job_id"]] = d
    return out


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- phases ------------------------------------------------------------------------------------


def seed_queue(db_url: str, admin: str, url: str, n: int) -> tuple[list[int], float]:
    """``n`` queued search jobs in one transaction (the spec as the API stored one) →
    (their ids, commit time)."""
    import httpx
    from sqlalchemy import insert

    from service.db import make_engine, make_session_factory
    from service.models import Job

    r = httpx.post(
        url + "/v1/jobs",
        json={"kind": "search", "spec": SPEC},
        headers=_headers(admin),
        timeout=30,
    )
    r.raise_for_status()
    spec = r.json()["spec"]
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)
    rows = [
        {
            "kind": "search",
            "status": "queued",
            "project": "default",
            "priority": 0,
            "spec": spec,
            "attempt": 1,
            "max_attempts": 1,
            "scheduled_at": now,
            "created_at": now,
            "updated_at": now,
            "cancel_requested": False,
        }
        for _ in range(n)
    ]
    with factory() as s:
        ids = list(s.scalars(insert(Job).returning(Job.id), rows))
        s.commit()
    t = time.time()
    engine.dispose()
    return ids, t


def measure_claims(
    db_url: str, procs: list[ApiProc], ids: list[int], t_submit: float, timeout: float
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from service.db import make_engine, make_session_factory
    from service.models import Job

    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    cpu0 = [p.cpu_s() for p in procs]
    pg0 = _postgres_cpu_s()
    lo, hi = min(ids), max(ids)
    deadline = time.monotonic() + timeout
    with factory() as s:
        while True:
            left = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.id.between(lo, hi), Job.status == "queued")
            )
            s.rollback()
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    t_done = time.time()
    cpu1 = [p.cpu_s() for p in procs]
    pg1 = _postgres_cpu_s()
    with factory() as s:
        rows = s.execute(
            select(Job.claimed_by, Job.created_at, Job.started_at).where(
                Job.id.between(lo, hi), Job.status != "queued"
            )
        ).all()
    engine.dispose()
    waits = [(st - cr).total_seconds() * 1e3 for _, cr, st in rows]
    by: dict[str, int] = defaultdict(int)
    for who, _, _ in rows:
        by[who] += 1
    # from the first claim (a tick's clock: every job of one claim has its tick's start) to
    # the moment the queue was seen empty (polled every 0.1 s)
    first = min((st for _, _, st in rows), default=None)
    span = t_done - first.timestamp() if first is not None else 0.0
    by_pid: dict[int, int] = defaultdict(int)
    for who, n in by.items():  # the dispatcher's name: host:pid:suffix
        by_pid[int(who.split(":")[1])] += n
    per_proc = [
        {
            "claimed": by_pid.get(p.proc.pid, 0) if p.proc else 0,
            "server_cpu_s": round(c1 - c0, 2),
            "claims_per_s": round(by_pid.get(p.proc.pid, 0) / span, 1) if p.proc and span else None,
        }
        for p, c0, c1 in zip(procs, cpu0, cpu1, strict=True)
    ]
    server_cpu = sum(cpu1) - sum(cpu0)
    return {
        "jobs": len(ids),
        "claimed": len(rows),
        "unclaimed": len(ids) - len(rows),
        "wall_s": round(t_done - t_submit, 2),
        "claim_span_s": round(span, 2),
        "claims_per_s": round(len(rows) / span, 1) if span > 0 else None,
        "claims_per_s_per_proc": round(len(rows) / span / len(procs), 1) if span > 0 else None,
        "per_proc": per_proc,
        "submit_to_claim": _ms(waits),
        "server_cpu_s": round(server_cpu, 2),
        "postgres_cpu_s": round(pg1 - pg0, 2),
        "claims_per_server_cpu_s": round(len(rows) / server_cpu, 1) if server_cpu > 0 else None,
    }


async def _ingest(
    fleet: dict[int, dict[str, Any]], procs: list[ApiProc], plan: dict[str, Any]
) -> dict[str, Any]:
    import httpx

    # every API process's jobs in turn (the fleet's first posts reach every process)
    by_url: dict[str, list[int]] = defaultdict(list)
    for job in sorted(fleet):
        by_url[fleet[job]["api_url"]].append(job)
    lanes = list(by_url.values())
    jobs = [lane[i] for i in range(max(map(len, lanes))) for lane in lanes if i < len(lane)]
    next_seq = dict.fromkeys(jobs, 0)
    sent_batches: dict[int, list[list[dict[str, Any]]]] = defaultdict(list)
    stats: dict[str, Any] = defaultdict(int)
    lat_events: list[float] = []
    lat_beats: list[float] = []
    per_url: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    stop_at = time.monotonic() + plan["ingest_s"]
    counter = [0]
    rng_every = max(1, round(1 / plan["dup_fraction"])) if plan["dup_fraction"] else 0
    limits = httpx.Limits(max_connections=plan["concurrency"] * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> None:
            while time.monotonic() < stop_at:
                k = counter[0]
                counter[0] += 1
                job = jobs[k % len(jobs)]
                info = fleet[job]
                base = f"{info['api_url']}/v1/jobs/{job}"
                if plan["heartbeat_every"] and k % plan["heartbeat_every"] == 0:
                    t0 = time.perf_counter()
                    r = await client.post(base + "/heartbeat", headers=_headers(info["token"]))
                    lat_beats.append((time.perf_counter() - t0) * 1e3)
                    stats["heartbeats"] += 1
                    if r.status_code != 200:
                        errors.append(f"heartbeat {r.status_code}")
                    continue
                if rng_every and k % rng_every == 1 and sent_batches[job]:
                    events = sent_batches[job][-1]  # a re-sent batch: all duplicates
                    stats["resent"] += len(events)
                else:
                    s0 = next_seq[job]
                    next_seq[job] = s0 + plan["batch"]
                    events = [
                        {
                            "seq": s,
                            "type": "step",
                            "data": {"phase": "weights", "epoch": 0, "step": s, "loss": 1.0},
                        }
                        for s in range(s0, s0 + plan["batch"])
                    ]
                    sent_batches[job].append(events)
                    stats["unique_sent"] += len(events)
                t0 = time.perf_counter()
                r = await client.post(
                    base + "/events", json={"events": events}, headers=_headers(info["token"])
                )
                lat_events.append((time.perf_counter() - t0) * 1e3)
                if r.status_code != 200:
                    errors.append(f"events {r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                stats["accepted"] += body["accepted"]
                stats["duplicates"] += body["duplicates"]
                per_url[info["api_url"]] += body["accepted"] + body["duplicates"]

        cpu0 = [p.cpu_s() for p in procs]
        pg0 = _postgres_cpu_s()
        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(plan["concurrency"])))
        wall = time.perf_counter() - t0
        cpu1 = [p.cpu_s() for p in procs]
        pg1 = _postgres_cpu_s()
    events_total = stats["accepted"] + stats["duplicates"]
    per_proc = []
    for p, c0, c1 in zip(procs, cpu0, cpu1, strict=True):
        n = per_url.get(p.url, 0)
        per_proc.append(
            {
                "events": n,
                "events_per_s": round(n / wall, 1),
                "cpu_s": round(c1 - c0, 2),
                "events_per_cpu_s": round(n / (c1 - c0), 1) if c1 > c0 else None,
            }
        )
    return {
        "wall_s": round(wall, 2),
        "batch": plan["batch"],
        "concurrency": plan["concurrency"],
        "posts": len(lat_events),
        "heartbeats": stats["heartbeats"],
        "unique_sent": stats["unique_sent"],
        "resent": stats["resent"],
        "accepted": stats["accepted"],
        "duplicates": stats["duplicates"],
        "events_per_s": round(events_total / wall, 1),
        "events_per_s_per_proc": round(events_total / wall / len(procs), 1),
        "per_proc": per_proc,
        "post_events": _ms(lat_events),
        "post_heartbeat": _ms(lat_beats),
        "postgres_cpu_s": round(pg1 - pg0, 2),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def measure_ingest(
    db_url: str, fleet: dict[int, dict[str, Any]], procs: list[ApiProc], plan: dict[str, Any]
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from service.db import make_engine
    from service.models import JobEvent

    out = run_async(_ingest(fleet, procs, plan))
    engine = make_engine(db_url)
    with engine.connect() as c:
        stored = c.scalar(
            select(func.count())
            .select_from(JobEvent)
            .where(JobEvent.type == "step", JobEvent.job_id.in_(list(fleet)))
        )
        distinct = c.scalar(
            select(func.count()).select_from(
                select(JobEvent.job_id, JobEvent.seq)
                .where(JobEvent.type == "step", JobEvent.job_id.in_(list(fleet)))
                .distinct()
                .subquery()
            )
        )
    engine.dispose()
    out["stored"] = stored
    out["no_lost_or_duplicated"] = stored == distinct == out["unique_sent"] == out["accepted"]
    out["duplicates_counted"] = out["duplicates"] == out["resent"]
    return out


async def _sse(
    job: int, info: dict[str, Any], procs: list[ApiProc], admin: str, plan: dict[str, Any]
) -> dict[str, Any]:
    import httpx

    n_events, n_watch = plan["sse_events"], plan["watchers"]
    seq0 = 1 << 30
    sent_at: dict[int, float] = {}
    got: list[dict[int, float]] = [{} for _ in range(n_watch)]
    ready = [asyncio.Event() for _ in range(n_watch)]
    errors: list[str] = []
    timeout = httpx.Timeout(60, read=60)
    async with httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=n_watch + 8)
    ) as client:
        r = await client.get(f"{procs[0].url}/v1/jobs/{job}", headers=_headers(admin))
        after = r.json().get("last_event_id") or 0

        async def watch(i: int) -> None:
            url = f"{procs[i % len(procs)].url}/v1/jobs/{job}/events?after={after}"
            try:
                async with client.stream("GET", url, headers=_headers(admin)) as resp:
                    ready[i].set()
                    async for line in resp.aiter_lines():
                        if line.startswith("data:"):
                            d = json.loads(line[5:])
                            s = d.get("seq")
                            if isinstance(s, int) and s >= seq0:
                                got[i][s] = time.perf_counter()
                                if len(got[i]) >= n_events:
                                    return
            except (httpx.HTTPError, ValueError) as e:
                errors.append(f"watcher {i}: {type(e).__name__}: {e}")
            finally:
                ready[i].set()

        tasks = [asyncio.create_task(watch(i)) for i in range(n_watch)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 60)
        await asyncio.sleep(1.0)  # every stream past its first read
        base = f"{info['api_url']}/v1/jobs/{job}/events"
        for k in range(n_events):
            s = seq0 + k
            sent_at[s] = time.perf_counter()
            ev = {"seq": s, "type": "log", "data": {"message": f"fan-out {k}"}}
            r = await client.post(base, json={"events": [ev]}, headers=_headers(info["token"]))
            r.raise_for_status()
            await asyncio.sleep(0.2)
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
    lats = [(g[s] - sent_at[s]) * 1e3 for g in got for s in g if s in sent_at]
    complete = sum(1 for g in got if len(g) == n_events)
    return {
        "watchers": n_watch,
        "events": n_events,
        "deliveries": len(lats),
        "expected": n_watch * n_events,
        "watchers_saw_every_event": complete,
        "watcher_errors": len(errors),
        "first_errors": errors[:3],
        "latency": _ms(lats),
    }


def measure_pages(url: str, admin: str, n: int) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers=_headers(admin), timeout=30) as c:
        first = c.get("/v1/jobs", params={"limit": 50}).json()
        cursor = first.get("next_cursor")
        cases = {
            "first_page": {"limit": 50},
            "cursor_page": {"limit": 50, "cursor": cursor},
            "status_running": {"limit": 50, "status": "running"},
        }
        for name, params in cases.items():
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = c.get("/v1/jobs", params=params)
                lat.append((time.perf_counter() - t0) * 1e3)
                r.raise_for_status()
            out[name] = _ms(lat) | {"rows": len(r.json()["data"])}
    return out


def measure_db_size(db_url: str, n_jobs: int) -> dict[str, Any]:
    from sqlalchemy import func, select, text

    from service.db import make_engine
    from service.models import Job, JobEvent

    engine = make_engine(db_url)
    with engine.connect() as c:
        c.execute(text("ANALYZE"))
        db = c.scalar(text("SELECT pg_database_size(current_database())"))
        tables = {
            t: c.scalar(text(f"SELECT pg_total_relation_size('{t}')"))
            for t in ("jobs", "job_events", "tokens")
        }
        jobs = c.scalar(select(func.count()).select_from(Job))
        events = c.scalar(select(func.count()).select_from(JobEvent))
        empty = c.scalar(text("SELECT pg_database_size('template1')"))
    engine.dispose()
    return {
        "jobs": jobs,
        "events": events,
        "database_bytes": db,
        "empty_database_bytes": empty,
        "table_bytes": tables,
        "jobs_table_bytes_per_job": round(tables["jobs"] / max(jobs, 1)),
        "tokens_bytes_per_job": round(tables["tokens"] / max(jobs, 1)),
        "job_events_bytes_per_event": round(tables["job_events"] / max(events, 1)),
        "database_bytes_per_job": round((db - empty) / max(n_jobs, 1)),
    }


def measure_reconcile(
    db_url: str, admin: str, workdir: Path, running: int, per_job: bool
) -> dict[str, Any]:
    """One API process restarted on ``running`` running jobs; its dispatcher's reconcile."""
    env = {"BENCH_PER_JOB": "1" if per_job else "0", "DENSENAS_RUN_MIGRATIONS": "false"}
    t0 = time.perf_counter()
    with api_procs(db_url, admin, workdir, 1, **env) as (p,):
        healthy = time.perf_counter() - t0
        deadline = time.monotonic() + 600
        line = None
        while line is None and time.monotonic() < deadline:
            time.sleep(0.2)
            line = p.reconcile_line()
        cpu = p.cpu_s()
    return {
        "path": "per-job alive()" if per_job else "alive_many()",
        "running": running,
        "reconciled": line["jobs"] if line else None,
        "reconcile_s": line["s"] if line else None,
        "process_healthy_s": round(healthy, 2),
        "server_cpu_s": round(cpu, 2),
    }


async def _complete(fleet: dict[int, dict[str, Any]], n: int, conc: int) -> dict[str, Any]:
    import httpx

    ids = sorted(fleet)[-n:]
    lat: list[float] = []
    bad: list[int] = []
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(job: int) -> None:
            info = fleet[job]
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(
                    f"{info['api_url']}/v1/jobs/{job}/complete",
                    json={"outcome": "failed", "error": "simulated end of the attempt"},
                    headers=_headers(info["token"]),
                )
                lat.append((time.perf_counter() - t0) * 1e3)
                if r.status_code != 200:
                    bad.append(r.status_code)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(j) for j in ids))
        wall = time.perf_counter() - t0
    return {
        "completes": len(ids),
        "per_s": round(len(ids) / wall, 1),
        "latency": _ms(lat),
        "errors": len(bad),
    }


# -- per-job memory on a real local Ray ---------------------------------------------------------

MEMORY_RESULT = Path(__file__).resolve().parent / "results" / "scale" / "memory.json"
#: A search of seconds (tiny space, synthetic 16×16 data), one Train worker.
MEMORY_SPEC = {
    "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4, "input_size": 16},
    "epochs": 3,
    "warmup_epochs": 1,
    "batch_size": 16,
    "checkpoint_every": 10,
    "num_workers": 1,
}
ROLES = {
    "job actor": "ray::JobActor",
    "Train controller": "ray::TrainController",
    "Train worker": "ray::RayTrainWorker",
}


def _proc_memory(pid: int) -> dict[str, Any] | None:
    """RSS, PSS and private (USS) MiB of ``pid``, and whether torch's library is mapped."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    kb = {}
    for line in rollup.splitlines()[1:]:
        k, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            kb[k] = int(rest.split()[0])
    private = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {
        "rss_mib": round(kb.get("Rss", 0) / 1024, 1),
        "pss_mib": round(kb.get("Pss", 0) / 1024, 1),
        "uss_mib": round(private / 1024, 1),
        "torch_loaded": "libtorch" in maps,
    }


def _ray_roles() -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        for role, prefix in ROLES.items():
            if title.startswith(prefix):
                out[role].append(int(d.name))
    return out


def job_memory(timeout: float = 600) -> dict[str, Any]:
    """One small search on an embedded local Ray (RayExecutor, 2 CPUs), reporting to a real
    HTTP server of the worker routes: the peak RSS / PSS / USS of its job actor, its Train
    controller and its Train worker, sampled every 0.25 s while it runs, and whether each
    had torch loaded. The job actor is the service's own per-job process; the controller is
    Ray Train's (docs/capacity.md §Per-job memory)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.fake_control_plane import FakeControlPlane
    from tests.support.tiny_specs import tiny_space
    from workers.executors import RayExecutor
    from workers.payload import JobPayload

    spec = {"space": tiny_space(input_size=16), **MEMORY_SPEC}
    peak: dict[str, dict[str, Any]] = {}
    storage = tempfile.mkdtemp(prefix="densenas-mem-")
    ex = RayExecutor(num_cpus=2, object_store_memory=150 * 1024**2)
    try:
        ex._ray()
        baseline = _ray_roles()  # nothing of ours yet
        with FakeControlPlane() as plane:
            plane.add_job(1, token="tok-1")
            t0 = time.monotonic()
            ex.start(
                JobPayload(
                    job_id=1,
                    kind="search",
                    attempt=1,
                    spec=spec,
                    api_url=plane.url,
                    job_token="tok-1",
                    storage_path=storage,
                )
            )
            many = getattr(ex, "alive_many", None)  # absent before issue 16
            alive_many = many([1, 2, 3]) if many else None
            # the executor's sweep, twice (a suspect is killed on its second sighting): the
            # running attempt's actor stays
            swept = [ex.sweep({1: 1}).actors_killed for _ in range(2)]
            ex_alive = ex.alive(1)
            while not plane.jobs[1].completions and time.monotonic() - t0 < timeout:
                for role, pids in _ray_roles().items():
                    for pid in pids:
                        m = _proc_memory(pid)
                        if m is None:
                            continue
                        best = peak.setdefault(role, {"pids": set(), **m})
                        best["pids"].add(pid)
                        for k in ("rss_mib", "pss_mib", "uss_mib"):
                            best[k] = max(best[k], m[k])
                        best["torch_loaded"] = best["torch_loaded"] or m["torch_loaded"]
                time.sleep(0.25)
            outcome = (plane.jobs[1].completions or [{}])[0].get("outcome")
            wall = time.monotonic() - t0
    finally:
        ex.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    for v in peak.values():
        v["pids"] = len(v["pids"])
    return {
        "outcome": outcome,
        "wall_s": round(wall, 1),
        "alive_many([1, 2, 3])": sorted(alive_many) if alive_many is not None else None,
        "sweep_killed": swept,
        "alive_after_sweeps": ex_alive,
        "roles": peak,
        "baseline_roles": {k: len(v) for k, v in baseline.items()},
    }


def memory_markdown() -> list[str]:
    """The per-job memory runs (``python -m bench.scale memory LABEL``), when present."""
    if not MEMORY_RESULT.exists():
        return []
    data = json.loads(MEMORY_RESULT.read_text())
    lines = [
        "",
        "Per-job processes on a real local Ray (`python -m bench.scale memory LABEL`: one small "
        "search, peak over its run; USS = private memory, PSS = private + shared / sharers):",
        "",
        "| run | process | RSS MiB | PSS MiB | USS MiB | torch loaded |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in data.items():
        for role, m in run.get("roles", {}).items():
            lines.append(
                f"| {label} ({run.get('date', '')[:10]}) | {role} | {m['rss_mib']} | "
                f"{m['pss_mib']} | {m['uss_mib']} | {'yes' if m['torch_loaded'] else 'no'} |"
            )
    return lines


def memory_main(label: str) -> None:
    """``python -m bench.scale memory LABEL``: :func:`job_memory` into MEMORY_RESULT[label]."""
    MEMORY_RESULT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(MEMORY_RESULT.read_text()) if MEMORY_RESULT.exists() else {}
    data[label] = job_memory() | {"date": datetime.now(UTC).isoformat(timespec="seconds")}
    MEMORY_RESULT.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data[label], indent=2))


# -- the run -----------------------------------------------------------------------------------


def run_case(base_url: str, size: int, n: int, plan: dict[str, Any], last: bool) -> dict:
    admin = "bench-admin-" + secrets.token_hex(8)
    workdir = Path(tempfile.mkdtemp(prefix="densenas-scale-"))
    out: dict[str, Any] = {"jobs": size, "api_procs": n}
    try:
        with fresh_database(base_url) as db_url:
            with api_procs(db_url, admin, workdir, n) as procs:
                ids, t_submit = seed_queue(db_url, admin, procs[0].url, size)
                _log(f"{size} jobs × {n} API process(es): claiming")
                out["claim"] = measure_claims(db_url, procs, ids, t_submit, timeout=300)
                fleet: dict[int, dict[str, Any]] = {}
                deadline = time.monotonic() + 30
                while len(fleet) < size + 1 and time.monotonic() < deadline:
                    fleet = read_spools(procs)
                    time.sleep(0.1)
                out["fleet_started"] = len(fleet)
                _log(f"ingest ({plan['ingest_s']} s)")
                out["ingest"] = measure_ingest(db_url, fleet, procs, plan)
                _log("SSE fan-out")
                job0 = min(fleet)
                out["sse"] = run_async(_sse(job0, fleet[job0], procs, admin, plan))
                out["page"] = measure_pages(procs[0].url, admin, plan["page_n"])
                out["db_size"] = measure_db_size(db_url, size + 1)
            if last:
                running = len(fleet)
                _log(f"restart reconcile of {running} running jobs (alive_many)")
                out["reconcile"] = [measure_reconcile(db_url, admin, workdir, running, False)]
                if running <= plan["reconcile_before_max"]:
                    _log("restart reconcile, per-job path")
                    out["reconcile"].append(
                        measure_reconcile(db_url, admin, workdir, running, True)
                    )
            with api_procs(db_url, admin, workdir, n, DENSENAS_RUN_MIGRATIONS="false") as procs:
                # the restarted processes have new URLs: the fleet posts to the first
                for info in fleet.values():
                    info["api_url"] = procs[0].url
                _log("complete")
                out["complete"] = run_async(
                    _complete(fleet, min(plan["complete_n"], len(fleet)), plan["concurrency"])
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    base = _pg_url()
    before = load_snapshot()
    cases = []
    for size in plan["sizes"]:
        for n in plan["procs"]:
            cases.append(run_case(base, size, n, plan, last=n == plan["procs"][-1]))
    return {
        "title": TITLE,
        "plan": plan,
        "goals": GOALS,
        "cases": cases,
        "load": [before, load_snapshot()],
    }


def write_summary(result: dict[str, Any]) -> Path:
    path = Path(__file__).resolve().parent / "results" / "scale.md"
    path.write_text(markdown(result) + "\n")
    return path


def markdown(r: dict[str, Any]) -> str:
    g = r["goals"]
    lines = [
        "`python -m bench scale`: the real app (`service.app.create_app` under uvicorn, one "
        "process each, dispatcher on) on PostgreSQL 15, with a simulated fleet that speaks the "
        "worker HTTP protocol with job tokens (bench/scale.py). " + shared_note(r.get("load", [])),
        "",
        "| jobs | API procs | claims/s (all) | claims/s per proc | claims per server CPU-s "
        "| submit→claim p50 / p99 / max ms | ingest events/s (all) | per proc | "
        "events per server CPU-s (per proc) | POST events p50 / p99 ms | heartbeat p99 ms | "
        "no lost/dup | SSE watchers complete | SSE p50 / p99 ms | page p50 / p99 ms |",
        "|" + "---|" * 15,
    ]
    for c in r["cases"]:
        cl, ing, sse, pg = c["claim"], c["ingest"], c["sse"], c["page"]["first_page"]
        w = cl["submit_to_claim"]
        eps_cpu = ", ".join(str(p["events_per_cpu_s"]) for p in ing["per_proc"])
        lines.append(
            f"| {c['jobs']} | {c['api_procs']} | {cl['claims_per_s']} | "
            f"{cl['claims_per_s_per_proc']} | {cl['claims_per_server_cpu_s']} | "
            f"{w.get('p50_ms')} / {w.get('p99_ms')} / {w.get('max_ms')} | "
            f"{ing['events_per_s']} | {ing['events_per_s_per_proc']} | {eps_cpu} | "
            f"{ing['post_events'].get('p50_ms')} / {ing['post_events'].get('p99_ms')} | "
            f"{ing['post_heartbeat'].get('p99_ms')} | "
            f"{'yes' if ing['no_lost_or_duplicated'] and ing['duplicates_counted'] else 'NO'} | "
            f"{sse['watchers_saw_every_event']}/{sse['watchers']} | "
            f"{sse['latency'].get('p50_ms')} / {sse['latency'].get('p99_ms')} | "
            f"{pg['p50_ms']} / {pg['p99_ms']} |"
        )
    lines += ["", "Restart reconcile (one API process restarted on every running job):", ""]
    lines += ["| running jobs | path | reconcile s | process healthy s |", "|---|---|---|---|"]
    for c in r["cases"]:
        for rc in c.get("reconcile", []):
            lines.append(
                f"| {rc['running']} | {rc['path']} | {rc['reconcile_s']} | "
                f"{rc['process_healthy_s']} |"
            )
    lines += ["", "Database size and completes:", ""]
    lines += [
        "| jobs | API procs | DB bytes/job | jobs row B/job | token B/job | event B/event "
        "| events stored | completes/s | complete p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"]:
        d, cp = c["db_size"], c["complete"]
        lines.append(
            f"| {c['jobs']} | {c['api_procs']} | {d['database_bytes_per_job']} | "
            f"{d['jobs_table_bytes_per_job']} | {d['tokens_bytes_per_job']} | "
            f"{d['job_events_bytes_per_event']} | {d['events']} | {cp['per_s']} | "
            f"{cp['latency'].get('p99_ms')} |"
        )
    lines += memory_markdown()
    lines += [
        "",
        f"Goals: claims ≥ {g['claim_per_proc_s']}/s per API process, ingest ≥ "
        f"{g['ingest_eps_per_proc']} events/s per API process, reconcile of 10k running jobs "
        f"< {g['reconcile_10k_s']} s. The box has 2 cores shared by the API processes, "
        "PostgreSQL and the load generator, so wall rates with N > 1 show contention; "
        "*per server CPU-second* is what one free core per API process would sustain.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve_main()
    elif sys.argv[1:2] == ["memory"]:
        memory_main(sys.argv[2] if len(sys.argv) > 2 else "after")
    else:
        from .__main__ import main

        sys.exit(main(["scale", *sys.argv[1:]]))

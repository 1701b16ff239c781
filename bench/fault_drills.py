"""Fault drills against a real ``densenas serve --executor ray`` (issue 12: measured robustness).

One server subprocess (embedded single-machine Ray with the machine's CPUs, SQLite, its own temp
``DENSENAS_DATA_DIR`` and Ray temp dir, a free port on 127.0.0.1) runs every drill; drill 6
kills it and starts it again on the same data dir and database. Every job is the same tiny
search (a synthetic 16 px, 4-class data set on a two-stage custom space, a checkpoint every 10
global steps, a ``step`` event every 10), so a clean reference job run first says which step
events a job should store.

0. reference: one clean job — its wall time and its stored steps.
1. worker SIGKILL (what the kernel's OOM killer does): the Ray Train worker of rank 0 (its pid
   from the worker marker ``<run dir>/workers/attempt1-rank0.json``) after the first checkpoint.
2. Train controller SIGKILL mid-run (the ``TrainController`` actor process of this server's Ray).
3. hung worker: SIGSTOP the rank-0 worker; the progress watchdog ends the attempt ("no progress:
   …") and kills it; the retry resumes.
4. impossible requests: a search with 64 workers (422 naming ``num_workers``) and custom spaces
   of 10,000 blocks (4xx in < 3 s while ``GET /healthz``, timed from another thread, answers in
   < 1 s).
5. cancel while pending: job A holds both CPUs (2 workers), job B waits ``queued`` (the dispatcher
   claims only what fits), B is cancelled, A succeeds, the next job runs.
6. control plane SIGKILL mid-job (``kill -9`` of the serve process group; the embedded Ray dies
   with it), restart on the same data dir and database: the job is reconciled and retried.
Then a final job, which must succeed.

Per drill: time to detect (fault → the attempt's end is recorded: the job's ``status`` event,
server clock, same host), time to recover (fault → the job, or the next job, succeeded), step
events lost / duplicated against the reference (stored ``step`` events, all pages of
``GET /v1/jobs/{id}/events?format=json``), CPUs leaked once idle (``GET /v1/cluster``: total −
available, leftover placement groups and job actors, waiting up to 30 s) and the
``attempt_errors`` the user sees. A drill whose expectation fails is reported as a miss.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from .common import RESULTS
from .timing import load_snapshot, shared_note

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support: the test suite's server and /proc helpers
    sys.path.insert(0, str(ROOT))

from tests.support.ray_procs import cmdline, descendants, kill_processes_using  # noqa: E402
from tests.support.serve import TERMINAL, Server  # noqa: E402
from tests.support.tiny_specs import tiny_space  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

TITLE = "Fault drills"

#: tests/integration/test_ray_search.py's SEARCH (a search of seconds once Ray Train runs):
#: 104 global steps (30 weight steps in the warm-up epoch, 30 + 7 arch steps in each search
#: epoch), a checkpoint and a step event every 10.
SPEC: dict[str, Any] = {
    "space": tiny_space(input_size=16),
    "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4, "input_size": 16},
    "epochs": 3,
    "warmup_epochs": 1,
    "batch_size": 16,
    "seed": 3,
    "w_lr": 0.05,
    "a_lr": 0.1,
    "cost": {"lam": 2.0},
    "checkpoint_every": 10,
    "num_workers": 1,
}
QUICK_SPEC = {**SPEC, "epochs": 2}

#: The server's environment (its Ray processes and workers inherit it).
SERVER_ENV = {
    "DENSENAS_RETRY_BACKOFF_S": "1",
    "DENSENAS_POLL_INTERVAL_S": "0.2",
    "DENSENAS_HEARTBEAT_TIMEOUT_S": "20",
    "DENSENAS_SWEEP_INTERVAL_S": "2",
    "DENSENAS_WATCHDOG_MIN_S": "20",
    "DENSENAS_WATCHDOG_FACTOR": "5",
    "DENSENAS_WATCHDOG_STARTUP_S": "120",
    "DENSENAS_REPORT_FLUSH_S": "0.2",
    "DENSENAS_HEARTBEAT_S": "1",
    "DENSENAS_CANCEL_GRACE_S": "2",
    "RAY_USAGE_STATS_ENABLED": "0",
}

JOB_TIMEOUT = 240.0
IDLE_TIMEOUT = 30.0


def _log(msg: str) -> None:
    print(f"   [fault_drills] {msg}", flush=True)


def _parse_ts(value: str | None) -> float | None:
    """An API timestamp → epoch seconds (naive ones are UTC: SQLite drops the zone)."""
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _short(text: str | None, n: int = 110) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _gist(error: str | None, n: int = 90) -> str:
    """An attempt error as a table cell: its first sentence, plus which process died and how
    (Ray's messages put that deep inside a long text)."""
    import re

    text = error or ""
    head = _short(text.strip().split("\n", 1)[0], n)
    extra = []
    m = re.search(r"class_name: (\w+)", text) or re.search(r"actor=Actor\((\w+)", text)
    if m:
        extra.append(m.group(1))
    m = re.search(r"pid[=:] ?(\d+)", text)
    if m:
        extra.append(f"pid {m.group(1)}")
    m = re.search(r"Worker exit type: (\w+)", text)
    if m:
        extra.append(f"exit {m.group(1)}")
    return head + (f" ({', '.join(extra)})" if extra else "")


class Drills:
    """The server, its API client and the helpers every drill uses."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.tmp = Path(tempfile.mkdtemp(prefix="dnfd-", dir="/tmp"))  # short: Ray's sockets
        self.ray_tmp = self.tmp / "ray"
        self.ray_tmp.mkdir()
        self.db = self.tmp / "drills.db"
        self.server = Server(
            self.tmp,
            f"sqlite:///{self.db}",
            executor="ray",
            extra_env={**SERVER_ENV, "RAY_TMPDIR": str(self.ray_tmp)},
        )
        self.data_dir = self.tmp / "data"
        self.c: httpx.Client | None = None
        self.reference_steps: list[int] = []
        self.stopped_pids: list[int] = []

    # -- server ---------------------------------------------------------------------------------
    def start(self) -> float:
        t0 = time.monotonic()
        self.server.start()
        if self.c is not None:
            self.c.close()
        self.c = self.server.client()
        return time.monotonic() - t0

    def close(self) -> None:
        for pid in self.stopped_pids:  # a SIGSTOPped worker nothing killed (reported already)
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.c is not None:
            self.c.close()
        self.server.stop()
        # Ray processes of this server that outlived it (they name its own temp dirs)
        kill_processes_using([str(self.tmp)])
        if os.environ.get("FAULT_DRILLS_KEEP"):  # debugging: keep the logs and the database
            _log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- API ------------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any] | None = None, **extra: Any) -> int:
        r = self.c.post("/v1/jobs", json={"kind": "search", "spec": spec or self.spec, **extra})
        r.raise_for_status()
        return r.json()["id"]

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.c.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()

    def wait_terminal(self, job_id: int, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["status"] in TERMINAL and j,
            timeout,
            0.2,
            f"job {job_id} to end",
        )

    def events(self, job_id: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            r = self.c.get(
                f"/v1/jobs/{job_id}/events",
                params={"format": "json", "after": after, "limit": 1000},
            )
            r.raise_for_status()
            page = r.json()["data"]
            if not page:
                return out
            out += page
            after = page[-1]["id"]

    def cluster(self) -> dict[str, Any]:
        r = self.c.get("/v1/cluster")
        r.raise_for_status()
        return r.json()

    def leaks(self, timeout: float = IDLE_TIMEOUT) -> dict[str, Any]:
        """Once no job runs: CPUs still reserved (total − available), placement groups and job
        actors left, after waiting up to ``timeout`` for them to go."""
        t0 = time.monotonic()
        while True:
            st = self.cluster()
            reserved = round(st["total"].get("CPU", 0.0) - st["available"].get("CPU", 0.0), 3)
            clean = reserved == 0 and not st["placement_groups"] and not st["job_actors"]
            waited = time.monotonic() - t0
            if clean or waited > timeout:
                return {
                    "cpus_leaked": reserved,
                    "placement_groups": st["placement_groups"],
                    "job_actors": st["job_actors"],
                    "total_cpus": st["total"].get("CPU"),
                    "idle_after_s": round(waited, 1),
                    "clean": clean,
                }
            time.sleep(0.5)

    # -- what a job stored ----------------------------------------------------------------------
    def step_audit(self, job_id: int) -> dict[str, Any]:
        evs = self.events(job_id)
        steps = Counter(e["data"].get("global_step") for e in evs if e["type"] == "step")
        seqs = Counter(e["seq"] for e in evs if e.get("seq") is not None)
        ref = set(self.reference_steps)
        return {
            "events": len(evs),
            "step_events": sum(steps.values()),
            "lost": sorted(ref - set(steps)),
            "duplicated": sorted(s for s, n in steps.items() if n > 1),
            "duplicate_events": sum(n - 1 for n in steps.values() if n > 1),
            "unexpected": sorted(set(steps) - ref, key=str),
            "duplicate_seqs": sum(n - 1 for n in seqs.values() if n > 1),
            "resumed": any(
                e["type"] == "log"
                and "resumed from the checkpoint" in str(e["data"].get("message", ""))
                for e in evs
            ),
            "_events": evs,
        }

    @staticmethod
    def attempt_end(evs: list[dict[str, Any]], attempt: int) -> dict[str, Any] | None:
        """The ``status`` event that ended ``attempt`` (retry or failure)."""
        for e in evs:
            d = e["data"]
            if (
                e["type"] == "status"
                and d.get("from") == "running"
                and d.get("failed_attempt") == attempt
            ):
                return e
        return None

    # -- processes of this server's Ray -----------------------------------------------------------
    def run_dir(self, job_id: int) -> Path:
        return self.data_dir / "checkpoints" / f"job-{job_id}" / f"densenas-job-{job_id}"

    def wait_checkpoint(self, job_id: int, attempt: int = 1, rank: int = 0) -> dict[str, Any]:
        """The worker marker of ``rank`` once the attempt has a checkpoint registered."""
        import json

        d = self.run_dir(job_id)
        marker = d / "workers" / f"attempt{attempt}-rank{rank}.json"

        def ready() -> dict[str, Any] | None:
            if self.job(job_id)["status"] in TERMINAL:
                raise RuntimeError(f"job {job_id} ended before its first checkpoint")
            has_ckpt = (d / "checkpoint_manager_snapshot.json").exists() or any(
                p.is_dir() for p in d.glob("checkpoint_*")
            )
            if has_ckpt and marker.exists():
                return json.loads(marker.read_text())
            return None

        return wait_for(
            ready, JOB_TIMEOUT, 0.1, f"job {job_id}: a checkpoint and its worker marker"
        )

    def our_pids(self) -> set[int]:
        return set(descendants(self.server.proc.pid)) if self.server.proc else set()

    def controller_pids(self) -> list[int]:
        return sorted(p for p in self.our_pids() if any("TrainController" in a for a in cmdline(p)))


def _is_stopped(pid: int) -> bool | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- drills --------------------------------------------------------------------------------------


def _finish(
    dr: Drills, out: dict[str, Any], job_id: int, t_fault: float, checks: dict[str, bool]
) -> dict[str, Any]:
    """Common tail of a kill drill: wait for the job, time detect/recover, audit its steps,
    check for leaks."""
    job = dr.wait_terminal(job_id)
    audit = dr.step_audit(job_id)
    evs = audit.pop("_events")
    end = dr.attempt_end(evs, 1)
    out.update(
        {
            "job_id": job_id,
            "status": job["status"],
            "attempts": job["attempt"],
            "detect_s": _r(_parse_ts(end["created_at"]) - t_fault) if end else None,
            "detect_reason": end["data"].get("error") if end else None,
            "recover_s": _r(_parse_ts(job["finished_at"]) - t_fault)
            if job["status"] == "succeeded"
            else None,
            "attempt_errors": [
                {"attempt": e["attempt"], "error": e["error"]} for e in job["attempt_errors"]
            ],
            "events": audit,
        }
    )
    out["leaks"] = dr.leaks()
    checks.update(
        {
            "succeeded": job["status"] == "succeeded",
            "attempt 1 ended and was retried": end is not None and job["attempt"] >= 2,
            "the user sees attempt 1's error": bool(job["attempt_errors"]),
            "attempt 2 resumed from the checkpoint": audit["resumed"],
            "no step event lost": not audit["lost"],
            "no step event duplicated": not audit["duplicated"],
            "0 CPUs reserved, no group or actor left": out["leaks"]["clean"],
        }
    )
    return out


def _verdict(out: dict[str, Any], checks: dict[str, bool]) -> dict[str, Any]:
    out["checks"] = checks
    out["missed"] = [k for k, ok in checks.items() if not ok]
    out["met"] = not out["missed"]
    _log(
        f"{out['drill']}: {'met' if out['met'] else 'MISSED ' + str(out['missed'])} "
        f"(detect {out.get('detect_s')} s, recover {out.get('recover_s')} s)"
    )
    return out


def drill_reference(dr: Drills) -> dict[str, Any]:
    t0 = time.time()
    jid = dr.submit()
    job = dr.wait_terminal(jid)
    audit = dr.step_audit(jid)
    evs = audit.pop("_events")
    steps = sorted(e["data"]["global_step"] for e in evs if e["type"] == "step")
    dr.reference_steps = steps
    first_step = next((e for e in evs if e["type"] == "step"), None)
    out = {
        "drill": "reference",
        "job_id": jid,
        "status": job["status"],
        "attempts": job["attempt"],
        "wall_s": _r(_parse_ts(job["finished_at"]) - t0) if job["finished_at"] else None,
        "submit_to_first_step_s": _r(_parse_ts(first_step["created_at"]) - t0)
        if first_step
        else None,
        "steps": steps,
        "step_events": len(steps),
        "events": audit["events"],
        "result_global_steps": ((job.get("result") or {}).get("metrics") or {}).get("global_steps"),
        "attempt_errors": [e["error"] for e in job["attempt_errors"]],
    }
    out["leaks"] = dr.leaks()
    return _verdict(
        out,
        {
            "succeeded": job["status"] == "succeeded" and job["attempt"] == 1,
            "stored step events": bool(steps),
            "no step event duplicated": len(steps) == len(set(steps)),
            "0 CPUs reserved, no group or actor left": out["leaks"]["clean"],
        },
    )


def drill_worker_kill(dr: Drills) -> dict[str, Any]:
    jid = dr.submit()
    marker = dr.wait_checkpoint(jid)
    victim = marker["pid"]
    os.kill(victim, signal.SIGKILL)
    t_fault = time.time()
    _log(f"worker SIGKILL: job {jid}, rank-0 pid {victim}")
    out = {"drill": "worker SIGKILL", "victim_pid": victim}
    checks: dict[str, bool] = {}
    _finish(dr, out, jid, t_fault, checks)
    return _verdict(out, checks)


def drill_controller_kill(dr: Drills) -> dict[str, Any]:
    before = set(dr.controller_pids())
    jid = dr.submit()
    dr.wait_checkpoint(jid)
    new = sorted(set(dr.controller_pids()) - before)
    out: dict[str, Any] = {"drill": "controller SIGKILL", "controller_pids": new}
    if len(new) != 1:
        out.update({"job_id": jid, "error": f"expected one new TrainController, found {new}"})
        dr.wait_terminal(jid)
        out["leaks"] = dr.leaks()
        return _verdict(out, {"found the controller": False})
    os.kill(new[0], signal.SIGKILL)
    t_fault = time.time()
    _log(f"controller SIGKILL: job {jid}, pid {new[0]}")
    checks: dict[str, bool] = {}
    _finish(dr, out, jid, t_fault, checks)
    return _verdict(out, checks)


def drill_hung_worker(dr: Drills) -> dict[str, Any]:
    jid = dr.submit()
    marker = dr.wait_checkpoint(jid)
    victim = marker["pid"]
    os.kill(victim, signal.SIGSTOP)
    t_fault = time.time()
    dr.stopped_pids.append(victim)
    _log(f"hung worker: SIGSTOP job {jid}, rank-0 pid {victim}")
    out: dict[str, Any] = {"drill": "hung worker (SIGSTOP)", "victim_pid": victim}
    # when does the stopped process go away (the watchdog's kill)?
    gone_at: list[float] = []

    def watch_victim() -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            if not _alive(victim):
                gone_at.append(time.time())
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_victim, daemon=True)
    watcher.start()
    checks: dict[str, bool] = {}
    _finish(dr, out, jid, t_fault, checks)
    watcher.join(1)
    out["stopped_worker_gone_s"] = _r(gone_at[0] - t_fault) if gone_at else None
    out["stopped_worker_state_at_end"] = (
        "gone" if not _alive(victim) else "stopped" if _is_stopped(victim) else "running"
    )
    if not _alive(victim):
        dr.stopped_pids.remove(victim)
    checks["the watchdog ended it (no progress)"] = "no progress" in (
        out.get("detect_reason") or ""
    )
    checks["the stopped worker was killed"] = out["stopped_worker_state_at_end"] == "gone"
    return _verdict(out, checks)


def _big_space(blocks: int, k: int) -> dict[str, Any]:
    """tests/unit/service/test_admission.py's ``space(blocks, k)``: one stage of ``blocks``."""
    return {
        "name": "huge",
        "stem": {"channels": 16, "stride": 1},
        "tail_channels": 64,
        "align_ops": ["mb_k3_e3"],
        "layer_ops": ["mb_k3_e3", "skip"],
        "stages": [{"stride": 1, "widths": [32] * blocks, "num_layers": 1}],
        "max_connections": k,
    }


def drill_impossible(dr: Drills) -> dict[str, Any]:
    out: dict[str, Any] = {"drill": "impossible requests", "requests": []}
    jobs_before = dr.c.get("/v1/jobs", params={"limit": 100}).json()["data"]
    lat: list[float] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=dr.server.url, timeout=30) as probe:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    code = probe.get("/healthz").status_code
                    if code != 200:
                        errors.append(f"healthz {code}")
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                lat.append(time.perf_counter() - t0)
                time.sleep(0.01)

    cases = [
        ("num_workers 64", {**dr.spec, "num_workers": 64}, "spec.num_workers"),
        (
            "custom space, 10,000 blocks × 10,000 connections",
            {**dr.spec, "space": _big_space(10_000, 10_000)},
            "spec.space",
        ),
        ("custom space, 10,000 blocks", {**dr.spec, "space": _big_space(10_000, 4)}, "spec.space"),
    ]
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        time.sleep(0.2)
        for name, spec, loc in cases:
            n0 = len(lat)
            t0 = time.perf_counter()
            r = dr.c.post("/v1/jobs", json={"kind": "search", "spec": spec})
            took = time.perf_counter() - t0
            time.sleep(0.05)
            body = r.json() if r.headers.get("content-type", "").endswith("json") else {}
            locs = [e.get("loc") for e in body.get("errors") or []]
            during = lat[n0:] or [float("nan")]
            out["requests"].append(
                {
                    "case": name,
                    "status": r.status_code,
                    "answer_s": round(took, 3),
                    "detail": body.get("detail"),
                    "locs": locs,
                    "names_field": any(str(x).startswith(loc) for x in locs),
                    "healthz_max_s_during": round(max(during), 3),
                    "healthz_polls": len(during),
                }
            )
    finally:
        stop.set()
        poller.join(10)
    out["healthz_max_s"] = round(max(lat), 3) if lat else None
    out["healthz_polls"] = len(lat)
    out["healthz_errors"] = errors[:5]
    jobs_after = dr.c.get("/v1/jobs", params={"limit": 100}).json()["data"]
    out["jobs_created"] = len(jobs_after) - len(jobs_before)
    reqs = out["requests"]
    checks = {
        "num_workers 64 → 422 naming num_workers": reqs[0]["status"] == 422
        and reqs[0]["names_field"]
    }
    for rq in reqs[1:]:
        checks[f"{rq['case']} → 4xx in < 3 s"] = 400 <= rq["status"] < 500 and rq["answer_s"] < 3.0
    checks["/healthz < 1 s throughout"] = (
        out["healthz_max_s"] is not None and out["healthz_max_s"] < 1.0 and not errors
    )
    checks["no job created"] = out["jobs_created"] == 0
    out["detect_s"] = max(rq["answer_s"] for rq in reqs)
    return _verdict(out, checks)


def drill_cancel_pending(dr: Drills) -> dict[str, Any]:
    out: dict[str, Any] = {"drill": "cancel while pending"}
    total = dr.cluster()["total"].get("CPU", 0)
    a = dr.submit({**dr.spec, "num_workers": int(total)})
    wait_for(lambda: dr.job(a)["status"] == "running", JOB_TIMEOUT, 0.2, f"job A ({a}) to run")
    b = dr.submit()
    t_b = time.monotonic()
    # B must stay queued while A holds the CPUs: watch it (and Ray) for a while
    seen: set[str] = set()
    b_in_ray = False
    held_max = 0.0
    while time.monotonic() - t_b < 6.0:
        seen.add(dr.job(b)["status"])
        st = dr.cluster()
        held_max = max(held_max, st["held_by_running_jobs"].get("CPU", 0))
        b_in_ray |= b in st["job_actors"] or any(g["job_id"] == b for g in st["placement_groups"])
        time.sleep(0.3)
    a_status = dr.job(a)["status"]
    t0 = time.perf_counter()
    r = dr.c.post(f"/v1/jobs/{b}/cancel")
    answer = time.perf_counter() - t0
    b_job = dr.wait_terminal(b, 30)
    cancelled_s = time.perf_counter() - t0
    a_job = dr.wait_terminal(a)
    out["leaks"] = dr.leaks()
    # the next job runs
    t_next = time.time()
    c = dr.submit()
    c_job = dr.wait_terminal(c)
    out.update(
        {
            "job_a": a,
            "job_a_workers": int(total),
            "job_a_status": a_job["status"],
            "job_a_status_when_cancelling_b": a_status,
            "job_b": b,
            "job_b_statuses_while_a_ran": sorted(seen),
            "job_b_in_ray_while_queued": b_in_ray,
            "held_by_running_jobs_cpus": held_max,
            "cancel_answer": r.status_code,
            "cancel_answer_s": round(answer, 3),
            "job_b_status": b_job["status"],
            "detect_s": round(cancelled_s, 2),
            "job_b_error": b_job.get("error"),
            "next_job": c,
            "next_job_status": c_job["status"],
            "recover_s": _r(_parse_ts(c_job["finished_at"]) - t_next)
            if c_job["status"] == "succeeded"
            else None,
            "attempt_errors": [
                {"job": j["id"], "attempt": e["attempt"], "error": e["error"]}
                for j in (a_job, b_job, c_job)
                for e in j["attempt_errors"]
            ],
        }
    )
    audit_a = dr.step_audit(a)
    audit_a.pop("_events")
    out["events"] = audit_a  # a 2-worker job takes the same global steps
    leak_after_next = dr.leaks()
    out["leaks_after_next_job"] = leak_after_next
    return _verdict(
        out,
        {
            "B stayed queued while A held the CPUs": seen == {"queued"} and not b_in_ray,
            "B cancelled at once (< 2 s)": b_job["status"] == "cancelled" and cancelled_s < 2.0,
            "A succeeded": a_job["status"] == "succeeded",
            "the next job succeeded": c_job["status"] == "succeeded",
            "no step event lost (A)": not audit_a["lost"],
            "no step event duplicated (A)": not audit_a["duplicated"],
            "0 CPUs reserved, no group or actor left": out["leaks"]["clean"]
            and leak_after_next["clean"],
        },
    )


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("jobs", "job_events", "architectures")
        }


def drill_control_plane_kill(dr: Drills) -> dict[str, Any]:
    out: dict[str, Any] = {"drill": "control plane SIGKILL"}
    jid = dr.submit()
    dr.wait_checkpoint(jid)
    events_before = dr.events(jid)
    ours = {p: cmdline(p) for p in dr.our_pids()}
    before = _counts(dr.db)
    serve_pid = dr.server.proc.pid
    dr.server.kill()  # SIGKILL to the serve process group
    t_fault = time.time()
    _log(
        f"control plane SIGKILL: serve pid {serve_pid} (job {jid} running, "
        f"{len(ours)} descendant processes)"
    )
    after_kill = _counts(dr.db)

    # what of the old server's process tree outlived the kill (its embedded Ray)? Up to 3 s.
    def survivors() -> dict[int, list[str]]:
        return {p: a for p, a in ours.items() if _alive(p) and cmdline(p) == a}

    t_gone = time.monotonic()
    while survivors() and time.monotonic() - t_gone < 3.0:
        time.sleep(0.05)
    left = survivors()
    out["processes_before_kill"] = len(ours)
    out["processes_gone_s"] = None if left else round(time.monotonic() - t_gone, 2)
    out["survivors_3s_after_kill"] = [
        f"{p} {os.path.basename(a[0]) if a else '?'}" for p, a in left.items()
    ]
    for p in left:  # ours, by pid (checked against its command line above)
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_processes_using([str(dr.ray_tmp)])
    t_restart = time.time()
    out["restart_healthy_s"] = round(dr.start(), 1)
    job = dr.wait_terminal(jid)
    audit = dr.step_audit(jid)
    evs = audit.pop("_events")
    end = dr.attempt_end(evs, 1)
    ids_after = {e["id"] for e in evs}
    lost_events = [e["id"] for e in events_before if e["id"] not in ids_after]
    final_counts = _counts(dr.db)
    out.update(
        {
            "job_id": jid,
            "status": job["status"],
            "attempts": job["attempt"],
            "detect_s": _r(_parse_ts(end["created_at"]) - t_fault) if end else None,
            "restart_to_reconcile_s": _r(_parse_ts(end["created_at"]) - t_restart) if end else None,
            "restart_to_success_s": _r(_parse_ts(job["finished_at"]) - t_restart)
            if job["status"] == "succeeded"
            else None,
            "recover_s": _r(_parse_ts(job["finished_at"]) - t_fault)
            if job["status"] == "succeeded"
            else None,
            "detect_reason": end["data"].get("error") if end else None,
            "rows_before_kill": before,
            "rows_after_kill": after_kill,
            "rows_at_end": final_counts,
            "events_before_kill": len(events_before),
            "events_lost_across_restart": lost_events,
            "attempt_errors": [
                {"attempt": e["attempt"], "error": e["error"]} for e in job["attempt_errors"]
            ],
            "events": audit,
        }
    )
    out["leaks"] = dr.leaks()
    return _verdict(
        out,
        {
            "succeeded": job["status"] == "succeeded",
            "reconciled (attempt 1 ended as lost, retried)": end is not None
            and job["attempt"] >= 2,
            "no job row lost": after_kill["jobs"] == before["jobs"] == final_counts["jobs"],
            "no stored event lost": not lost_events
            and after_kill["job_events"] >= before["job_events"],
            "attempt 2 resumed from the checkpoint": audit["resumed"],
            "no step event lost": not audit["lost"],
            "no step event duplicated": not audit["duplicated"],
            "the embedded Ray died with the server": not left,
            "0 CPUs reserved, no group or actor left": out["leaks"]["clean"],
        },
    )


def drill_final(dr: Drills) -> dict[str, Any]:
    t0 = time.time()
    jid = dr.submit()
    job = dr.wait_terminal(jid)
    audit = dr.step_audit(jid)
    audit.pop("_events")
    out = {
        "drill": "final job",
        "job_id": jid,
        "status": job["status"],
        "attempts": job["attempt"],
        "recover_s": _r(_parse_ts(job["finished_at"]) - t0) if job["finished_at"] else None,
        "events": audit,
        "attempt_errors": [e["error"] for e in job["attempt_errors"]],
    }
    out["leaks"] = dr.leaks()
    return _verdict(
        out,
        {
            "succeeded": job["status"] == "succeeded" and job["attempt"] == 1,
            "no step event lost": not audit["lost"],
            "no step event duplicated": not audit["duplicated"],
            "0 CPUs reserved, no group or actor left": out["leaks"]["clean"],
        },
    )


DRILLS: list[tuple[str, Callable[[Drills], dict[str, Any]]]] = [
    ("reference", drill_reference),
    ("worker_kill", drill_worker_kill),
    ("controller_kill", drill_controller_kill),
    ("hung_worker", drill_hung_worker),
    ("impossible", drill_impossible),
    ("cancel_pending", drill_cancel_pending),
    ("control_plane_kill", drill_control_plane_kill),
    ("final", drill_final),
]


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = QUICK_SPEC if getattr(args, "quick", False) else SPEC
    res: dict[str, Any] = {
        "title": TITLE,
        "spec": spec,
        "server_env": SERVER_ENV,
        "drills": {},
        "load": [load_snapshot()],
    }
    dr = Drills(spec)
    t0 = time.monotonic()
    try:
        res["server_start_s"] = round(dr.start(), 1)
        res["cluster_at_start"] = dr.cluster()
        for key, fn in DRILLS:
            _log(f"drill {key} …")
            t = time.monotonic()
            try:
                out = fn(dr)
            except Exception as e:  # noqa: BLE001 - a broken drill is a miss; the rest run
                _log(f"{key} broke: {type(e).__name__}: {e}")
                out = {
                    "drill": key,
                    "met": False,
                    "missed": [f"{type(e).__name__}: {e}"],
                    "checks": {},
                }
                try:
                    out["leaks"] = dr.leaks(5)
                except Exception:  # noqa: BLE001 - the server itself may be gone
                    pass
                if dr.server.proc is None or dr.server.proc.poll() is not None:
                    dr.start()
            out["drill_wall_s"] = round(time.monotonic() - t, 1)
            res["drills"][key] = out
            res["load"].append(load_snapshot())
    finally:
        res["server_log_tail"] = _server_log_tail(dr)
        res["server_log_counts"] = _server_log_counts(dr)
        dr.close()
    res["drills_wall_s"] = round(time.monotonic() - t0, 1)
    res["met"] = all(d.get("met") for d in res["drills"].values())
    return res


def _server_log_counts(dr: Drills) -> dict[str, int]:
    """How often the server logged the sweep's removals (its WARNINGs) over the whole run."""
    text = "".join(p.read_text(errors="replace") for p in dr.tmp.glob("serve-*.log"))
    return {
        "sweep_removed_groups": text.count("dispatcher: swept")
        - text.count("swept 0 placement group"),
        "sweep_killed_actors": text.count("killing a job actor no running attempt owns"),
        "watchdog_ended": text.count(": no progress:"),
    }


def _server_log_tail(dr: Drills, n: int = 30) -> list[str]:
    lines: list[str] = []
    for p in sorted(dr.tmp.glob("serve-*.log")):
        lines += [
            f"[{p.name}] {line}"
            for line in p.read_text(errors="replace").splitlines()
            if "WARNING" in line or "ERROR" in line or "warning" in line
        ]
    return lines[-n:]


# -- report --------------------------------------------------------------------------------------

WHAT = {
    "reference": "one clean job, nothing injected",
    "worker_kill": "SIGKILL of the rank-0 Ray Train worker (pid from its marker) after the "
    "first checkpoint (OOM-killer style)",
    "controller_kill": "SIGKILL of the Ray Train controller (`TrainController` process) after "
    "the first checkpoint",
    "hung_worker": "SIGSTOP of the rank-0 Ray Train worker after the first checkpoint "
    "(watchdog: min 20 s, factor 5)",
    "impossible": "POST a search with `num_workers: 64`; POST custom spaces of 10,000 blocks "
    "(× 10,000 and × 4 connections) while `/healthz` is polled",
    "cancel_pending": "job A with 2 workers (both CPUs), job B queued behind it; cancel B; "
    "then a next job",
    "control_plane_kill": "`kill -9` of the serve process group mid-job (the embedded Ray with "
    "it), restart on the same data dir and database",
    "final": "one more job after all drills",
}


#: What the first runs of this benchmark found (fixed in workers/executors.py with it).
FOUND = (
    "Found by these drills (fixed in `workers/executors.py` in the same change): (1) the "
    "embedded Ray was started by whichever thread first needed it; when that was an API "
    "request's AnyIO worker thread (`GET /v1/cluster` right after start-up), AnyIO ended the "
    "idle thread later and the kernel's parent-death signal (Ray starts its GCS, raylet and "
    "helpers with `PR_SET_PDEATHSIG=SIGKILL`, which fires when the forking *thread* ends) killed "
    'the whole local Ray under the running service, which exited 60 s later ("Failed to '
    'connect to GCS within 60 seconds"); `ray.init` now runs in a thread that lives as long '
    "as the process. (2) Two threads could run the first `ray.init` at once (the dispatcher's "
    'first tick and that request): "called ray.init twice" (a 503) or a half-imported '
    '`ray.util.placement_group`, and "Started a local Ray instance" twice; the first import '
    "and init are now serialised."
)


def _fmt(v: Any) -> str:
    return "–" if v is None else str(v)


def _events_cell(d: dict[str, Any]) -> str:
    ev = d.get("events")
    if not isinstance(ev, dict) or "lost" not in ev:
        return "–"
    return f"{len(ev['lost'])} / {ev['duplicate_events']}"


def _leak_cell(d: dict[str, Any]) -> str:
    lk = d.get("leaks")
    if not lk:
        return "–"
    extra = []
    if lk["placement_groups"]:
        extra.append(f"{len(lk['placement_groups'])} group(s)")
    if lk["job_actors"]:
        extra.append(f"actors {lk['job_actors']}")
    return f"{lk['cpus_leaked']:g}" + (f" ({', '.join(extra)})" if extra else "")


def _error_cell(key: str, d: dict[str, Any]) -> str:
    if key == "impossible":
        return (
            "; ".join(f"{r['status']}: {_short(r['detail'], 70)}" for r in d.get("requests", []))
            or "–"
        )
    if key == "cancel_pending":
        return (
            _short(f"B: {d.get('job_b_error')}", 90)
            if d.get("job_b_error")
            else "none (B: `cancelled`, no attempt ran)"
        )
    errs = d.get("attempt_errors") or []
    if not errs:
        return "none"
    return "; ".join(_gist(e["error"] if isinstance(e, dict) else e) for e in errs)


def _recover_cell(key: str, d: dict[str, Any]) -> str:
    if key == "reference":
        return f"wall {_fmt(d.get('wall_s'))}"
    if key == "impossible":
        return "–"
    return _fmt(d.get("recover_s"))


def _detect_cell(key: str, d: dict[str, Any]) -> str:
    if key in ("reference", "final"):
        return "–"
    return _fmt(d.get("detect_s"))


def markdown(res: dict[str, Any]) -> str:
    ds = res["drills"]
    ref = ds.get("reference", {})
    lines = [
        "A real `densenas serve --executor ray` subprocess (embedded single-machine Ray with "
        f"{_fmt((res.get('cluster_at_start') or {}).get('total', {}).get('CPU'))} CPUs, SQLite, "
        "its own temp data dir, 127.0.0.1) runs every drill; drill 6 kills it and starts it "
        "again on the same data dir and database. Every job is the same tiny search "
        f"(custom two-stage space, synthetic 16 px, {res['spec']['epochs']} epochs, "
        f"{ref.get('result_global_steps', '?')} global steps, a checkpoint and a step event "
        "every 10). Server settings: "
        + ", ".join(f"`{k}={v}`" for k, v in res["server_env"].items() if k.startswith("DENSENAS_"))
        + ".",
        "",
        "*Detect*: fault → the attempt's end recorded (its `status` event; for drill 4 the "
        "slowest refusal, for drill 5 the cancel request → B `cancelled`). *Recover*: fault → "
        "the job succeeded (drill 5: submit → the next job succeeded). *Events lost / dup*: "
        "stored `step` events (global steps) missing / stored more than once against the "
        "clean reference job. *CPUs leaked*: `GET /v1/cluster` total − available once no job "
        "runs (waiting up to 30 s), plus leftover placement groups / job actors.",
        "",
        "| # | drill | what was done | detect s | recover s | events lost / dup | CPUs leaked "
        "| error the user saw | verdict |",
        "|---|---|---|---:|---:|---|---|---|---|",
    ]
    for i, (key, _fn) in enumerate(DRILLS):
        d = ds.get(key)
        if d is None:
            continue
        num = "–" if key == "final" else str(i)
        verdict = "met" if d.get("met") else "**MISSED**: " + "; ".join(d.get("missed", []))
        lines.append(
            f"| {num} | {d.get('drill', key)} | {WHAT[key]} | {_detect_cell(key, d)} | "
            f"{_recover_cell(key, d)} | {_events_cell(d)} | {_leak_cell(d)} | "
            f"{_error_cell(key, d).replace('|', '/')} | {verdict} |"
        )
    lines += ["", "Details:", ""]
    if ref:
        lines.append(
            f"- Reference: submit → first stored step "
            f"{_fmt(ref.get('submit_to_first_step_s'))} s, submit → succeeded "
            f"{_fmt(ref.get('wall_s'))} s; "
            f"{ref.get('step_events')} step events (global steps "
            f"{ref.get('steps', [None])[0]}…{ref.get('steps', [None])[-1]})."
        )
    for key in ("worker_kill", "controller_kill", "hung_worker"):
        d = ds.get(key)
        if d and "detect_reason" in d:
            extra = ""
            if key == "hung_worker":
                extra = (
                    f" The stopped worker process was gone "
                    f"{_fmt(d.get('stopped_worker_gone_s'))} s after the SIGSTOP "
                    f"(state at the end: {d.get('stopped_worker_state_at_end')})."
                )
            lines.append(
                f"- {d['drill']}: attempt 1 ended {_fmt(d.get('detect_s'))} s after "
                f"the fault with “{_gist(d.get('detect_reason'), 160)}”; "
                f"{d.get('attempts')} attempts, {d.get('status')}; resumed from the "
                f"checkpoint: {d['events'].get('resumed')}.{extra}"
            )
    d = ds.get("impossible")
    if d and d.get("requests"):
        reqs = ", ".join(
            f"{r['case']}: {r['status']} in {r['answer_s']} s "
            f"(/healthz max {r['healthz_max_s_during']} s during it)"
            for r in d["requests"]
        )
        lines.append(
            f"- Impossible requests: {reqs}; /healthz max {d.get('healthz_max_s')} s "
            f"over {d.get('healthz_polls')} polls; jobs created: "
            f"{d.get('jobs_created')}."
        )
    d = ds.get("cancel_pending")
    if d and "job_b" in d:
        lines.append(
            f"- Cancel while pending: B's statuses while A ran: {d['job_b_statuses_while_a_ran']}"
            f" (in Ray: {d['job_b_in_ray_while_queued']}; CPUs held by running jobs "
            f"{d['held_by_running_jobs_cpus']:g}); cancel answered {d['cancel_answer']} in "
            f"{d['cancel_answer_s']} s, B {d['job_b_status']} after {d['detect_s']} s; A "
            f"{d['job_a_status']}; next job {d['next_job_status']} "
            f"{_fmt(d.get('recover_s'))} s after its submit."
        )
    d = ds.get("control_plane_kill")
    if d and "rows_before_kill" in d:
        lines.append(
            f"- Control plane SIGKILL: restart → healthy {d['restart_healthy_s']} s, → job "
            f"reconciled (attempt 1 ended: “{_gist(d.get('detect_reason'), 120)}”) "
            f"{_fmt(d.get('restart_to_reconcile_s'))} s, → job succeeded "
            f"{_fmt(d.get('restart_to_success_s'))} s. Rows before the kill {d['rows_before_kill']}"
            f", right after {d['rows_after_kill']}, at the end {d['rows_at_end']}; stored events "
            f"lost across the restart: {len(d['events_lost_across_restart'])} of "
            f"{d['events_before_kill']}. Processes of the old server (its embedded Ray): "
            + (
                f"all {d['processes_before_kill']} gone {d['processes_gone_s']} s after the kill."
                if d.get("processes_gone_s") is not None
                else f"alive 3 s after the kill: {d['survivors_3s_after_kill']}."
            )
        )
    counts = res.get("server_log_counts")
    if counts:
        lines.append(
            f"- Server log over the run: the sweep removed a placement group no running attempt "
            f"owned {counts['sweep_removed_groups']} time(s) and killed a leftover job actor "
            f"{counts['sweep_killed_actors']} time(s) (each a WARNING; with a 2 s sweep this "
            "includes the normal end of a job: its status is `succeeded` before its trainer "
            f"and actor are gone); the watchdog ended {counts['watchdog_ended']} attempt(s)."
        )
    lines += ["", FOUND]
    broken = [(k, d) for k, d in ds.items() if not d.get("met")]
    lines += [
        "",
        (
            f"All {len(ds)} drills met their expectations."
            if not broken
            else f"Misses: {len(broken)} of {len(ds)} drills — "
            + "; ".join(f"{d.get('drill', k)}: {', '.join(d.get('missed', []))}" for k, d in broken)
            + "."
        ),
    ]
    note = shared_note(res.get("load", []))
    if note:
        lines += [
            "",
            note.replace(
                "compare the side-by-side ratios, not the absolute figures",
                "the times above are upper bounds",
            ),
        ]
    return "\n".join(lines)


def write_summary(res: dict[str, Any]) -> Path:
    """``bench/results/fault_drills.md``: the section as BENCHMARKS.md shows it."""
    from .report import _machine_line

    path = RESULTS / "fault_drills.md"
    path.write_text(
        f"# {res.get('title', TITLE)}\n\nCommand: `{res.get('command')}` · wall "
        f"{res.get('wall_s')} s  \nMachine: {_machine_line(res.get('machine', {}))}"
        f"\n\n{markdown(res)}\n"
    )
    return path

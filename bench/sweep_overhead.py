"""Per-trial overhead of a sweep vs a lone search, on a real ``densenas serve --executor ray``
(issue 14).

One server subprocess (embedded single-machine Ray with the machine's CPUs, SQLite, its own temp
data dir, 127.0.0.1; the fault drills' server and settings) runs everything. Every search is the
same tiny one (a two-stage custom space, synthetic 16 px, 160 images, 2 epochs, batch 16,
``cost.mode: target``): ``step`` events come every 10 global steps, so the first ``step`` event
is global step 10, after the worker's first ``log`` event (global step 0: data loaded, supernet
built, the loop starts).

- lone search (N times, interleaved with the sweeps): claim (``started_at``: the dispatcher
  claimed it, its detached job actor is created next, which builds one TorchTrainer) → first
  ``log`` event → first ``step`` event → end;
- sweep over ``cost.target`` (``max_concurrent`` 1 and 2): the sweep's claim → each trial's
  start (``started_at`` of the trial job: the Tune trial's function called
  ``/trials/{i}/start``, its TorchTrainer is built next) → the trial's first ``log`` / ``step``
  event → its end; and the sweep's claim → end vs the trials' count × the lone searches' median
  claim → end.

Per-trial overhead = trial start → first step − the lone median claim → first step (what the
trial's own start costs beyond a lone search's); the Tuner and its trial actor come before the
trial's start and show in sweep claim → trial start. Times are the server's clock (the job rows
and the events' ``created_at``), one host.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from .common import RESULTS
from .fault_drills import SERVER_ENV, Drills, _fmt, _parse_ts, _r, _short
from .report import write_section
from .timing import load_snapshot, shared_note

TITLE = "Sweep overhead"

#: tests/integration/test_ray_sweep.py's trial search (seconds of training once Ray Train runs)
SEARCH: dict[str, Any] = {
    "space": None,  # tiny_space(input_size=16), filled in below
    "dataset": {"name": "synthetic", "limit_train": 160, "num_classes": 4, "input_size": 16},
    "epochs": 2,
    "warmup_epochs": 0,
    "batch_size": 16,
    "seed": 0,
    "cost": {"mode": "target", "target": 6.0e4},
    "checkpoint_every": 5,
}
TARGETS = [6.0e4, 1.2e5, 1.8e5]

#: lone searches, grid values, max_concurrent of each sweep
FULL: dict[str, Any] = {"lone": 3, "targets": TARGETS, "concurrency": [1, 2]}
QUICK: dict[str, Any] = {"lone": 1, "targets": TARGETS[:2], "concurrency": [1, 2]}

SWEEP_TIMEOUT = 900.0

#: The fault drills' server settings (fast flushes and heartbeats: event times are close to
#: when they happened), but the service's default 10 s between the dispatcher's sweeps of
#: placement groups and actors no running attempt owns.
SERVER = {**SERVER_ENV, "DENSENAS_SWEEP_INTERVAL_S": "10"}


def _log(msg: str) -> None:
    print(f"   [sweep_overhead] {msg}", flush=True)


def _search_spec() -> dict[str, Any]:
    from tests.support.tiny_specs import tiny_space  # sys.path set by bench.fault_drills

    return {**SEARCH, "space": tiny_space(input_size=16)}


# -- one job's timeline (pure: rows and events in, seconds out) -----------------------------------


def timeline(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A job's times from its row and stored events: submit → claim (the first ``status``
    event to running: attempt 1's claim, or a trial's start; the row's ``started_at``, which a
    retry moves, when there is none), → first worker ``log`` event, → first ``step`` event, →
    end; and its status changes (a retry shows there)."""
    created = _parse_ts(job.get("created_at"))
    moves = [e for e in events if e["type"] == "status"]
    running = next((e for e in moves if e["data"].get("to") == "running"), None)
    started = _parse_ts(running["created_at"]) if running else _parse_ts(job.get("started_at"))
    finished = _parse_ts(job.get("finished_at"))
    first_log = next((e for e in events if e["type"] == "log"), None)
    first_step = next((e for e in events if e["type"] == "step"), None)
    t_log = _parse_ts(first_log["created_at"]) if first_log else None
    t_step = _parse_ts(first_step["created_at"]) if first_step else None

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 2)

    return {
        "job_id": job["id"],
        "status": job["status"],
        "attempt": job.get("attempt"),
        "error": job.get("error"),
        "first_step_global": (first_step or {}).get("data", {}).get("global_step"),
        "step_events": sum(1 for e in events if e["type"] == "step"),
        "submit_to_claim_s": span(created, started),
        "claim_to_first_log_s": span(started, t_log),
        "claim_to_first_step_s": span(started, t_step),
        "first_log_to_first_step_s": span(t_log, t_step),
        "claim_to_end_s": span(started, finished),
        "attempt_errors": [
            {"attempt": e.get("attempt"), "error": _short(e.get("error"), 300)}
            for e in job.get("attempt_errors") or []
        ],
        "status_moves": [
            {
                "to": e["data"].get("to"),
                "attempt": e["data"].get("attempt"),
                "after_submit_s": span(created, _parse_ts(e["created_at"])),
                **{
                    k: _short(str(e["data"][k]), 200)
                    for k in ("reason", "error")
                    if e["data"].get(k) is not None
                },
            }
            for e in moves
        ],
        "_t": {"created": created, "started": started, "first_step": t_step, "end": finished},
    }


def stats(xs: list[float | None]) -> dict[str, Any] | None:
    """Median, min and max of the measured values (``None``: not measured) and their count."""
    vals = [x for x in xs if x is not None]
    if not vals:
        return None
    return {
        "median": round(statistics.median(vals), 2),
        "min": round(min(vals), 2),
        "max": round(max(vals), 2),
        "n": len(vals),
    }


def sweep_figures(
    sweep: dict[str, Any], trials: list[dict[str, Any]], lone: list[dict[str, Any]]
) -> dict[str, Any]:
    """A sweep's measured figures against the lone searches: ``sweep`` is the sweep's
    ``timeline`` (its row: no events needed), ``trials`` the trials' timelines with their
    ``trial`` index and ``config``, ``lone`` the lone searches' timelines."""
    lone_first = stats([x["claim_to_first_step_s"] for x in lone])
    lone_end = stats([x["claim_to_end_s"] for x in lone])
    t0 = sweep["_t"]["started"]
    rows = []
    for t in sorted(trials, key=lambda t: t["trial"]):
        ts = t["_t"]
        row = {k: v for k, v in t.items() if k != "_t"}
        row["sweep_claim_to_trial_start_s"] = (
            _r(ts["started"] - t0, 2) if None not in (t0, ts["started"]) else None
        )
        row["sweep_claim_to_first_step_s"] = (
            _r(ts["first_step"] - t0, 2) if None not in (t0, ts["first_step"]) else None
        )
        row["overhead_s"] = (
            _r(t["claim_to_first_step_s"] - lone_first["median"], 2)
            if lone_first and t["claim_to_first_step_s"] is not None
            else None
        )
        rows.append(row)
    lone_sum = round(lone_end["median"] * len(rows), 1) if lone_end else None
    wall = sweep["claim_to_end_s"]
    return {
        "sweep_id": sweep["job_id"],
        "status": sweep["status"],
        "error": sweep["error"],
        "attempts": sweep["attempt"],
        "attempt_errors": sweep["attempt_errors"],
        "status_moves": sweep["status_moves"],
        "submit_to_claim_s": sweep["submit_to_claim_s"],
        "claim_to_end_s": wall,
        "trials": rows,
        "trial_start_to_first_log": stats([r["claim_to_first_log_s"] for r in rows]),
        "trial_start_to_first_step": stats([r["claim_to_first_step_s"] for r in rows]),
        "trial_start_to_end": stats([r["claim_to_end_s"] for r in rows]),
        "sweep_claim_to_trial_start": stats([r["sweep_claim_to_trial_start_s"] for r in rows]),
        "sweep_claim_to_first_step": stats([r["sweep_claim_to_first_step_s"] for r in rows]),
        "overhead": stats([r["overhead_s"] for r in rows]),
        "lone_median_claim_to_end_x_trials_s": lone_sum,
        "sweep_vs_lone_sum": round(wall / lone_sum, 2) if wall and lone_sum else None,
    }


def lone_figures(lone: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": [{k: v for k, v in x.items() if k != "_t"} for x in lone],
        **{
            key: stats([x[f"{key}_s"] for x in lone])
            for key in (
                "submit_to_claim",
                "claim_to_first_log",
                "claim_to_first_step",
                "first_log_to_first_step",
                "claim_to_end",
            )
        },
    }


# -- the runs -------------------------------------------------------------------------------------


def _job_timeline(dr: Drills, job_id: int) -> dict[str, Any]:
    return timeline(dr.job(job_id), dr.events(job_id))


def run_lone(dr: Drills, spec: dict[str, Any], order: int) -> dict[str, Any]:
    jid = dr.submit(spec, tags=["bench-sweep-overhead"])
    dr.wait_terminal(jid)
    out = _job_timeline(dr, jid)
    out["order"] = order
    out["leaks"] = dr.leaks()
    _log(
        f"lone {jid}: {out['status']}, claim → first step {out['claim_to_first_step_s']} s, "
        f"→ end {out['claim_to_end_s']} s"
    )
    return out


def run_sweep(
    dr: Drills, spec: dict[str, Any], targets: list[float], concurrency: int, order: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A sweep over ``cost.target`` → (its timeline, its trials' timelines)."""
    r = dr.c.post(
        "/v1/jobs",
        json={
            "kind": "sweep",
            "tags": ["bench-sweep-overhead"],
            "spec": {
                "search": spec,
                "grid": {"cost.target": targets},
                "max_concurrent": concurrency,
            },
        },
    )
    r.raise_for_status()
    sid = r.json()["id"]
    dr.wait_terminal(sid, SWEEP_TIMEOUT)
    sweep = _job_timeline(dr, sid)
    sweep["order"] = order
    listed = dr.c.get("/v1/jobs", params={"parent": sid, "limit": 100})
    listed.raise_for_status()
    trials = []
    for t in listed.json()["data"]:
        tl = _job_timeline(dr, t["id"])
        tl["trial"] = t["trial"]
        tl["config"] = {"cost.target": targets[t["trial"]]}
        trials.append(tl)
    sweep["leaks"] = dr.leaks()
    _log(
        f"sweep {sid} (max_concurrent {concurrency}): {sweep['status']}, claim → end "
        f"{sweep['claim_to_end_s']} s, trial start → first step "
        f"{[t['claim_to_first_step_s'] for t in sorted(trials, key=lambda t: t['trial'])]} s"
    )
    return sweep, trials


def plan_order(plan: dict[str, Any]) -> list[tuple[str, int]]:
    """Lone searches interleaved with the sweeps (drift over minutes hits both): a lone search
    first, then each sweep followed by the next lone search, the rest at the end."""
    order: list[tuple[str, int]] = [("lone", 0)]
    lone_left = list(range(1, plan["lone"]))
    for mc in plan["concurrency"]:
        order.append(("sweep", mc))
        if lone_left:
            order.append(("lone", lone_left.pop(0)))
    order += [("lone", i) for i in lone_left]
    return order


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if getattr(args, "quick", False) else FULL
    spec = _search_spec()
    res: dict[str, Any] = {
        "title": TITLE,
        "spec": spec,
        "plan": plan,
        "server_env": SERVER,
        "load": [load_snapshot()],
    }
    dr = Drills(spec)
    dr.server.env.update(SERVER)
    lone: list[dict[str, Any]] = []
    sweeps: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    try:
        res["server_start_s"] = round(dr.start(), 1)
        res["cluster_at_start"] = dr.cluster()
        for i, (what, n) in enumerate(plan_order(plan)):
            if what == "lone":
                lone.append(run_lone(dr, spec, i))
            else:
                sweeps[n] = run_sweep(dr, spec, plan["targets"], n, i)
            res["load"].append(load_snapshot())
    finally:
        dr.close()
    res["lone"] = lone_figures(lone)
    res["sweeps"] = []
    for mc, (sweep, trials) in sweeps.items():
        fig = sweep_figures(sweep, trials, lone)
        fig.update(max_concurrent=mc, order=sweep["order"], leaks=sweep["leaks"])
        res["sweeps"].append(fig)
    return res


# -- report ---------------------------------------------------------------------------------------


def last_trial_end(s: dict[str, Any]) -> float | None:
    """Sweep claim → the last trial's end (the Tuner's work; the sweep's own end follows)."""
    ends = [
        t["sweep_claim_to_trial_start_s"] + t["claim_to_end_s"]
        for t in s["trials"]
        if t["sweep_claim_to_trial_start_s"] is not None and t["claim_to_end_s"] is not None
    ]
    return round(max(ends), 2) if ends else None


def _st(s: dict[str, Any] | None) -> str:
    if not s:
        return "–"
    if s["n"] == 1:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} ({_fmt(s['min'])}–{_fmt(s['max'])})"


def markdown(res: dict[str, Any]) -> str:
    lone = res["lone"]
    plan = res["plan"]
    spec = res["spec"]
    ds = spec["dataset"]
    cpus = (res.get("cluster_at_start") or {}).get("total", {}).get("CPU")
    lines = [
        f"A real `densenas serve --executor ray` subprocess (embedded single-machine Ray with "
        f"{_fmt(cpus)} CPUs, SQLite, 127.0.0.1; settings: "
        + ", ".join(f"`{k}={v}`" for k, v in res["server_env"].items() if k.startswith("DENSENAS_"))
        + f") runs "
        f"{plan['lone']} lone search(es) interleaved with one sweep per `max_concurrent` "
        f"({', '.join(str(c) for c in plan['concurrency'])}) over `cost.target` ∈ "
        f"{plan['targets']} (base `cost.mode: target`). Every search is the same tiny one: "
        f"custom two-stage space, synthetic {ds['input_size']} px, {ds['limit_train']} images, "
        f"{spec['epochs']} epochs, batch {spec['batch_size']}, 1 worker; its first `step` event "
        "is global step 10, its first `log` event global step 0 (data loaded, supernet built). "
        "Times are the server's clock (job rows, events' `created_at`); cells are median "
        "(min–max) over the jobs.",
        "",
        "*Start*: a lone search's claim (`started_at`: the dispatcher claimed it; its detached "
        "job actor is created next and builds one TorchTrainer) or a trial's start (`started_at` "
        "of the trial job: its Tune trial called `/trials/{i}/start`; its TorchTrainer is built "
        "next). *Overhead* = trial start → first step − the lone median claim → first step.",
        "",
        "| jobs | n | start → first log s | start → first step s | first log → first step s "
        "| start → end s | sweep claim → trial start s | sweep claim → first step s "
        "| overhead per trial s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| lone search | {(lone['claim_to_end'] or {}).get('n', 0)} | "
        f"{_st(lone['claim_to_first_log'])} | {_st(lone['claim_to_first_step'])} | "
        f"{_st(lone['first_log_to_first_step'])} | {_st(lone['claim_to_end'])} | – | – | – |",
    ]
    for s in res["sweeps"]:
        fl = stats([t["first_log_to_first_step_s"] for t in s["trials"]])
        lines.append(
            f"| trials, `max_concurrent` {s['max_concurrent']} | {len(s['trials'])} | "
            f"{_st(s['trial_start_to_first_log'])} | {_st(s['trial_start_to_first_step'])} | "
            f"{_st(fl)} | {_st(s['trial_start_to_end'])} | {_st(s['sweep_claim_to_trial_start'])} "
            f"| {_st(s['sweep_claim_to_first_step'])} | {_st(s['overhead'])} |"
        )
    lines += [
        "",
        "| sweep | status | attempts | submit → claim s | claim → last trial end s | claim → end "
        "s | trials × lone median claim → end s | sweep / lone sum |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["sweeps"]:
        lines.append(
            f"| {s['sweep_id']} (`max_concurrent` {s['max_concurrent']}, {len(s['trials'])} "
            f"trials) | {s['status']} | {s.get('attempts', '–')} | "
            f"{_fmt(s['submit_to_claim_s'])} | {_fmt(last_trial_end(s))} | "
            f"{_fmt(s['claim_to_end_s'])} | {_fmt(s['lone_median_claim_to_end_x_trials_s'])} | "
            f"{_fmt(s['sweep_vs_lone_sum'])} |"
        )
    lines += [
        "",
        "Each trial (sweep claim → trial start, trial start → first log / first step / end, "
        "overhead):",
        "",
    ]
    for s in res["sweeps"]:
        cells = "; ".join(
            f"trial {t['trial']} (target {t['config']['cost.target']:g}, job {t['job_id']}, "
            f"{t['status']}): {_fmt(t['sweep_claim_to_trial_start_s'])} → "
            f"{_fmt(t['claim_to_first_log_s'])} / {_fmt(t['claim_to_first_step_s'])} / "
            f"{_fmt(t['claim_to_end_s'])} s, overhead {_fmt(t['overhead_s'])} s"
            for t in s["trials"]
        )
        lines.append(f"- `max_concurrent` {s['max_concurrent']}: {cells}.")
        if (s.get("attempts") or 1) > 1:
            moves = "; ".join(
                f"{m['after_submit_s']} s: → {m['to']} (attempt {m['attempt']}"
                + "".join(f", {k}: {m[k]}" for k in ("reason", "error") if k in m)
                + ")"
                for m in s.get("status_moves", [])
            )
            lines.append(
                f"  Sweep {s['sweep_id']} ran {s['attempts']} attempts (claim → end is from "
                f"attempt 1's claim); its status changes after submit: {moves}."
            )
    runs = "; ".join(
        f"job {x['job_id']} (run #{x['order'] + 1}, {x['status']}): submit → claim "
        f"{_fmt(x['submit_to_claim_s'])}, → first log {_fmt(x['claim_to_first_log_s'])}, "
        f"→ first step {_fmt(x['claim_to_first_step_s'])}, → end {_fmt(x['claim_to_end_s'])} s"
        for x in lone["runs"]
    )
    lines.append(f"- lone searches: {runs}.")
    for para in _where(res):
        lines += ["", para]
    note = shared_note(res.get("load", []))
    if note:
        lines += ["", note]
    return "\n".join(lines)


def _where(res: dict[str, Any]) -> list[str]:
    """Where the time goes, from the measured figures."""
    lone = res["lone"]
    first_log = (lone["claim_to_first_log"] or {}).get("median")
    first_step = (lone["claim_to_first_step"] or {}).get("median")
    train = (lone["first_log_to_first_step"] or {}).get("median")
    end = (lone["claim_to_end"] or {}).get("median")
    out = [
        "Where the time goes: a lone search spends "
        f"{_fmt(first_log)} s (median) from its claim to its worker's first event — creating "
        "its detached job actor, then the TorchTrainer's controller actor, its placement group "
        "and worker group (one Ray worker process that imports torch and sets up gloo), then "
        f"the synthetic data and the supernet — against {_fmt(train)} s for its first 10 "
        f"training steps and {_fmt(end)} s claim → end in all: the fixed start-up, not the "
        "search, is most of a tiny search's time."
    ]
    for s in res["sweeps"]:
        st = s["sweep_claim_to_trial_start"] or {}
        tl = s["trial_start_to_first_log"] or {}
        para = (
            f"With `max_concurrent` {s['max_concurrent']}, the first trial starts "
            f"{_fmt(st.get('min'))} s after the sweep's claim (its job actor, the Tuner and "
            "the Tune trial actor, a fresh Ray process per trial, `reuse_actors` off), the "
            f"last {_fmt(st.get('max'))} s after it (trials beyond `max_concurrent` wait for "
            "a slot); from its own start a trial needs "
            f"{_fmt(tl.get('median'))} s to its first event (lone: {_fmt(first_log)} s) — the "
            "same TorchTrainer controller / worker-group start, now inside the Tune trial"
            + (
                ", two of them at once on the machine's cores"
                if s["max_concurrent"] > 1 and len(s["trials"]) > 1
                else ""
            )
            + f" — so its first step comes {_fmt((s['overhead'] or {}).get('median'))} s "
            f"(median) after a lone search's would ({_fmt(first_step)} s); the sweep takes "
            f"{_fmt(s['sweep_vs_lone_sum'])}× the lone searches' sum."
        )
        if (s.get("attempts") or 1) > 1:
            ok = sum(1 for t in s["trials"] if t["status"] == "succeeded")
            err = (s.get("attempt_errors") or [{}])[0].get("error")
            para += (
                f" Its attempt 1 ended as failed (“{_short(err, 140)}”) although "
                f"{ok} of {len(s['trials'])} trial jobs succeeded; attempt 2 found them "
                "succeeded and completed the sweep — claim → end includes that retry."
            )
        out.append(para)
    return out


def write_summary(res: dict[str, Any]):
    """``bench/results/sweep_overhead.md``: the section as BENCHMARKS.md shows it."""
    return write_section(RESULTS / "sweep_overhead.md", res, markdown(res))

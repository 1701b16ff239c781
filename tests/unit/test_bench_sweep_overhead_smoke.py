"""``bench/sweep_overhead.py`` without Ray (issue 14): its figures from made-up job rows and
events, and its Markdown on those and on the stored result of the real run. The real run
(``python -m bench sweep_overhead``: a ``densenas serve --executor ray``, minutes) is not
repeated here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bench import sweep_overhead as so
from bench.common import RESULTS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(s: float) -> str:
    return (T0 + timedelta(seconds=s)).isoformat()


def _job(jid: int, created: float, started: float, log: float, step: float, end: float):
    row = {
        "id": jid,
        "status": "succeeded",
        "attempt": 1,
        "error": None,
        "created_at": _at(created),
        "started_at": _at(started),
        "finished_at": _at(end),
    }
    events = [
        {"type": "status", "created_at": _at(started), "data": {"to": "running"}},
        {"type": "log", "created_at": _at(log), "data": {"message": "search on tiny"}},
        {"type": "step", "created_at": _at(step), "data": {"global_step": 10}},
        {"type": "step", "created_at": _at(step + 1), "data": {"global_step": 20}},
    ]
    return row, events


def _result() -> dict:
    lone = [so.timeline(*_job(i, 0, 1, 1 + d, 3 + d, 6 + d)) for i, d in ((1, 16), (2, 18))]
    for i, x in enumerate(lone):
        x["order"] = i
    sweep = so.timeline(_job(10, 100, 101, 0, 0, 170)[0], [])
    trials = []
    for i, start in enumerate((106, 130)):
        t = so.timeline(*_job(11 + i, 100, start, start + 19, start + 21, start + 24))
        t.update(trial=i, config={"cost.target": so.TARGETS[i]})
        trials.append(t)
    fig = so.sweep_figures(sweep, trials, lone)
    fig.update(max_concurrent=1, order=1, leaks={})
    return {
        "title": so.TITLE,
        "spec": {**so.SEARCH, "space": "tiny"},
        "plan": so.QUICK,
        "server_env": {},
        "cluster_at_start": {"total": {"CPU": 2.0}},
        "lone": so.lone_figures(lone),
        "sweeps": [fig],
        "load": [{"loadavg_1m": 0.5, "cores": 2}],
    }


def test_figures_from_rows_and_events():
    res = _result()
    json.dumps(res)  # what bench/__main__ writes (no timestamps left in)
    lone = res["lone"]
    assert lone["claim_to_first_step"] == {"median": 19.0, "min": 18.0, "max": 20.0, "n": 2}
    assert lone["claim_to_first_log"]["median"] == 17.0
    (s,) = res["sweeps"]
    assert s["claim_to_end_s"] == 69.0
    assert [t["sweep_claim_to_trial_start_s"] for t in s["trials"]] == [5.0, 29.0]
    assert [t["claim_to_first_step_s"] for t in s["trials"]] == [21.0, 21.0]
    assert [t["overhead_s"] for t in s["trials"]] == [2.0, 2.0]  # 21 − the lone median 19
    assert [t["sweep_claim_to_first_step_s"] for t in s["trials"]] == [26.0, 50.0]
    assert s["lone_median_claim_to_end_x_trials_s"] == 44.0  # 2 × 22
    assert s["sweep_vs_lone_sum"] == 1.57


def test_claim_from_the_running_status_event_when_the_row_has_none():
    row, events = _job(1, 0, 4, 20, 22, 25)
    row["started_at"] = None
    assert so.timeline(row, events)["claim_to_first_step_s"] == 18.0


def test_lone_searches_interleave_with_the_sweeps():
    assert so.plan_order(so.FULL) == [
        ("lone", 0),
        ("sweep", 1),
        ("lone", 1),
        ("sweep", 2),
        ("lone", 2),
    ]
    assert so.plan_order(so.QUICK) == [("lone", 0), ("sweep", 1), ("sweep", 2)]


def test_markdown_renders():
    md = so.markdown(_result())
    assert "| trials, `max_concurrent` 1 | 2 |" in md
    assert "overhead 2.0 s" in md and "Where the time goes" in md


def test_markdown_of_the_stored_result():
    path = RESULTS / "sweep_overhead.json"
    if not path.exists():
        pytest.skip("no stored result (python -m bench sweep_overhead)")
    res = json.loads(path.read_text())
    md = so.markdown(res)
    assert "could not render" not in md
    assert all(s["status"] == "succeeded" for s in res["sweeps"])
    for s in res["sweeps"]:
        assert f"`max_concurrent` {s['max_concurrent']}" in md

"""``python -m bench scale`` end to end at a tiny size (issue 16): N API processes on a fresh
PostgreSQL database, the simulated fleet, every phase, and its Markdown."""

from __future__ import annotations

import argparse
import json

import pytest


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.postgres
def test_scale_quick(monkeypatch, pg_url):
    from bench import scale

    monkeypatch.setenv("DENSENAS_TEST_PG_URL", pg_url)
    monkeypatch.setattr(
        scale,
        "QUICK",
        {
            **scale.QUICK,
            "sizes": [30],
            "procs": [1, 2],
            "ingest_s": 1,
            "concurrency": 4,
            "watchers": 3,
            "sse_events": 2,
            "page_n": 2,
            "complete_n": 10,
            "reconcile_before_max": 100,
        },
    )
    res = scale.run(argparse.Namespace(quick=True))
    json.dumps(res, default=str)
    assert [(c["jobs"], c["api_procs"]) for c in res["cases"]] == [(30, 1), (30, 2)]
    for c in res["cases"]:
        assert c["claim"]["claimed"] == 30 and c["claim"]["unclaimed"] == 0
        assert c["fleet_started"] == 31  # and the job posted through the API
        ing = c["ingest"]
        assert ing["errors"] == 0 and ing["accepted"] > 0
        assert ing["no_lost_or_duplicated"] and ing["duplicates_counted"]
        assert c["sse"]["watchers_saw_every_event"] == 3
        assert c["page"]["first_page"]["rows"] > 0
        assert c["db_size"]["database_bytes_per_job"] > 0
        assert c["complete"]["errors"] == 0
    paths = {r["path"]: r for r in res["cases"][-1]["reconcile"]}
    assert paths["alive_many()"]["reconciled"] == 31
    assert paths["per-job alive()"]["reconciled"] == 31
    md = scale.markdown(res)
    assert "alive_many()" in md and "claims/s" in md

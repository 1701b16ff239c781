"""Each benchmark's ``run()`` works end to end at tiny sizes and its Markdown renders.

The ``QUICK`` plans are shrunk further here (the suite's ``--quick`` is a smoke run of the real
measurements; these tests only check the plumbing), results stay in a temporary directory.
"""

from __future__ import annotations

import argparse
import json

import pytest

ARGS = argparse.Namespace(quick=True)


def _check(mod, res: dict) -> str:
    json.dumps(res, default=str)  # what bench/__main__ writes
    md = mod.markdown(res)
    assert isinstance(md, str) and md.strip()
    assert "could not render" not in md
    return md


def test_interleave_rotates_and_pairs_rounds():
    from bench.timing import interleave, paired_ratio, shared_note

    calls: list[tuple[int, str]] = []
    out = interleave(
        {n: (lambda r, n=n: calls.append((r, n))) for n in "abc"},
        warmup=1,
        repeats=3,
        setup=lambda r: calls.append((r, "setup")),
    )
    assert [n for r, n in calls if r == 1] == ["setup", "b", "c", "a"]  # rotated by round
    assert all(len(v["wall"]) == len(v["cpu"]) == 3 for v in out.values())
    r = paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 2.0])
    assert r["median"] == 2.0 and r["ratio_of_medians"] == 2.0 and r["n"] == 3
    assert "shared" in shared_note([{"loadavg_1m": 9.0, "cores": 2}])
    assert "shared" not in shared_note([{"loadavg_1m": 1.0, "cores": 2}])


@pytest.mark.slow
def test_core_step_quick(monkeypatch):
    import torch

    from bench import core_step
    from bench.__main__ import machine_facts

    monkeypatch.setattr(core_step, "QUICK", {"configs": [("mbv2-small", 32, 2, 4, 0, 2, None)]})
    monkeypatch.setattr(core_step, "THREADS", 1)
    # the steps must report the threads they ran on: ask for 1, let the (faked) setter give 2,
    # and leave 3 as the process default it restores — reporting the request (1) or the
    # count read after the restore (3) both fail
    real_set, original = torch.set_num_threads, torch.get_num_threads()
    real_set(3)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: real_set(2 if n == 1 else n))
    try:
        res = core_step.run(ARGS)
        assert torch.get_num_threads() == 3  # restored
    finally:
        real_set(original)
    assert res["threads"] == 2 and res["threads_requested"] == 1
    assert machine_facts(res)["torch_threads"] == 2  # what the Machine line of the report shows
    (c,) = res["configs"]
    assert c["threads_seen"] == [2]
    assert c["weight_sharing"] == "entangled"  # the supernet's default, resolved by _Search
    assert set(c["steps"]) == set(core_step.VARIANTS)
    for s in c["steps"].values():
        assert s["cpu"]["n"] == 2 and s["wall"]["median_ms"] > 0
        assert s["mult_adds_per_image_M"] > 0
    # work per variant: weight-gradient steps 3 passes, the arch step and its reference 2
    assert {k: s["passes"] for k, s in c["steps"].items()} == core_step.PASSES
    assert core_step.PASSES["supernet_arch"] == core_step.PASSES["frozen2_grad"] == 2
    # the frozen nets run the supernet's samples exactly: same mult-adds
    st = c["steps"]
    assert (
        st["supernet_weight"]["mult_adds_per_image_M"]
        == st["frozen_weight"]["mult_adds_per_image_M"]
    )
    assert (
        st["supernet_arch"]["mult_adds_per_image_M"] == st["frozen2_grad"]["mult_adds_per_image_M"]
    )
    # counted on the entangled rows' functional convs too: the child (a sub-network of the
    # same space) is not larger than a sampled one by an order of magnitude
    assert st["supernet_weight"]["mult_adds_per_image_M"] > 0.5 * c["child"]["mult_adds_M"]
    r = c["ratios"]
    for key in ("supernet_weight/frozen_weight", "supernet_arch/frozen2_grad"):
        assert r[key]["equal_work"] and r[key]["work"]["median"] == 1.0
        assert r[key]["cpu"]["median"] > 0 and r[key]["cpu"]["n"] == 2
    md = _check(core_step, res)
    assert "**2 intra-op thread(s) while timing**" in md
    assert "supernet weight / frozen weight" in md and "frozen 2-op grad-only" in md
    assert "≈ 1 by construction" in md


def test_core_step_selects_configs():
    from bench import core_step

    plan = core_step.FULL["configs"]
    small = core_step.selected(plan, ["mbv2-small"])
    assert small and all(c[0] == "mbv2-small" for c in small)
    assert core_step.selected(plan, None) == list(plan)
    with pytest.raises(SystemExit):
        core_step.selected(plan, ["nope"])


@pytest.mark.slow
def test_latency_table_quick(monkeypatch):
    from bench import latency_table

    monkeypatch.setattr(
        latency_table,
        "QUICK",
        {
            "space": "mbv2-small",
            "input_size": 32,
            "batch": 1,
            "warmup": 0,
            "repeats": 3,
            "builds": 2,
        },
    )
    res = latency_table.run(ARGS)
    assert res["builds_detail"][0]["entries"] == 168  # every op of mbv2-small at 32 px
    assert res["builds_detail"][0]["p90_p10_median"] >= 1.0
    assert 0 <= res["between_builds"]["rel_diff_median"]
    _check(latency_table, res)


@pytest.mark.slow
def test_cost_correlation_quick(monkeypatch, tmp_path):
    from bench import cost_correlation

    monkeypatch.setattr(cost_correlation, "RESULTS", tmp_path)
    monkeypatch.setattr(
        cost_correlation,
        "QUICK",
        {
            "sets": [
                {
                    "space": "mbv2-small",
                    "input_size": 32,
                    "num_classes": 10,
                    "sigmas": [2.0, 8.0],
                    "per_sigma": 3,
                    "warmup": 0,
                    "repeats": 2,
                    "t_warmup": 0,
                    "t_repeats": 1,
                    "cpu_time": True,
                    "mc": 2,
                }
            ]
        },
    )
    res = cost_correlation.run(ARGS)
    (s,) = res["sets"]
    assert s["nets"] == 6
    # the FLOPs table costs a derived net exactly like the closed-form count
    assert s["flops_table_vs_count_max_abs_diff_M"] < 1e-6
    c = s["correlations"]["chained FLOPs vs counted FLOPs"]
    assert c["n"] == 6 and (c["pearson"] is None or -1 <= c["pearson"] <= 1)
    assert (tmp_path / cost_correlation.PNG).stat().st_size > 1000
    assert "cost_correlation.png" in _check(cost_correlation, res)


@pytest.mark.slow
def test_search_memory_quick(monkeypatch):
    from bench import search_memory

    monkeypatch.setattr(search_memory, "QUICK", {"configs": [("mbv2-small", 32, 2, 4)]})
    res = search_memory.run(ARGS)
    assert [r["kind"] for r in res["rows"]] == ["weight", "arch"]
    for r in res["rows"]:
        assert r["peak_delta_mib"] >= r["build_delta_mib"] >= 0
    _check(search_memory, res)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.postgres
def test_service_load_quick(monkeypatch, pg_url):
    from bench import service_load

    monkeypatch.setattr(
        service_load,
        "QUICK",
        {
            "jobs": 60,
            "get_s": 1,
            "breakdown_s": 1,
            "get_conns": 2,
            "page_n": 3,
            "ingest_s": 1,
            "ingest_posters": 1,
            "batches": [32],
            "sse_n": 3,
            "submit_n": 1,
            "submit_executor": "inline",
        },
    )
    res = service_load.run(ARGS)
    assert res["get_job"]["rps"] and res["get_job"]["non_2xx"] == 0
    assert [b["non_2xx"] for b in res["breakdown"]] == [0, 0, 0]
    assert res["page"]["page_len"] > 0
    assert res["ingest"][0]["accepted"] > 0 and res["ingest"][0]["errors"] == 0
    assert res["sse"]["received"] == 3 and res["sse_cross"]["received"] == 3
    assert res["submit"]["final_status"] == ["succeeded"]
    assert res["submit"]["submit_to_first_worker_event_s"][0] > 0
    _check(service_load, res)

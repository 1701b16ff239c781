"""Latency-table build on the CPU: how long a whole space takes and how repeatable it is.

``profile_space`` times every candidate op of the space alone at its real input shape (batch 1,
eval, inference mode, ``warmup`` discarded runs, ``repeats`` timed runs, one pinned intra-op
thread). The table is built twice back to back, so besides the within-build spread of each
op's samples (p90/p10, coefficient of variation) the report gives the between-build change of
the medians — the figure a cost prediction actually depends on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from .timing import load_snapshot, quantile, shared_note

TITLE = "Latency table build (CPU, batch 1)"
FULL = {
    "space": "mbv2-imagenet",
    "input_size": 224,
    "batch": 1,
    "warmup": 10,
    "repeats": 30,
    "builds": 2,
}
QUICK = {
    "space": "mbv2-small",
    "input_size": 32,
    "batch": 1,
    "warmup": 3,
    "repeats": 10,
    "builds": 2,
}
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def _spread(table) -> dict[str, Any]:
    ratio, cv = [], []
    for st in table.entries.values():
        if st.n and st.p10_ms > 0:
            ratio.append(st.p90_ms / st.p10_ms)
            cv.append(st.std_ms / st.median_ms)
    return {
        "entries_timed": len(ratio),
        "p90_p10_median": statistics.median(ratio),
        "p90_p10_p90": quantile(ratio, 0.9),
        "p90_p10_max": max(ratio),
        "cv_median": statistics.median(cv),
        "cv_p90": quantile(cv, 0.9),
        "total_median_ms": sum(s.median_ms for s in table.entries.values()),
    }


def _cpu_time_build(
    space_name: str, input_size: int, batch: int, warmup: int, repeats: int
) -> dict[str, Any]:
    """The same op modules and shapes as ``profile_space``, timed by thread CPU time: the
    spread that is left when other processes' hold on the cores is taken out."""
    import torch

    from densenas_core.latency import build_sig_module, space_op_signatures
    from densenas_core.spaces import get_space

    space = get_space(space_name)
    ratio, cv, total = [], [], 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        for sig in space_op_signatures(space, input_size):
            if sig.op == "skip":
                continue
            m = build_sig_module(sig, space.stem.act).eval()
            x = torch.randn(batch, sig.c_in, sig.h, sig.w)
            xs = []
            with torch.inference_mode():
                for _ in range(warmup):
                    m(x)
                for _ in range(repeats):
                    a = time.thread_time_ns()
                    m(x)
                    xs.append((time.thread_time_ns() - a) / 1e6)
            med = statistics.median(xs)
            total += med
            if quantile(xs, 0.1) > 0:
                ratio.append(quantile(xs, 0.9) / quantile(xs, 0.1))
                cv.append(statistics.pstdev(xs) / med)
    finally:
        torch.set_num_threads(before)
    return {
        "entries_timed": len(ratio),
        "build_wall_s": round(time.perf_counter() - t0, 2),
        "build_cpu_s": round(time.process_time() - c0, 2),
        "p90_p10_median": round(statistics.median(ratio), 4),
        "p90_p10_p90": round(quantile(ratio, 0.9), 4),
        "cv_median": round(statistics.median(cv), 4),
        "cv_p90": round(quantile(cv, 0.9), 4),
        "total_median_ms": round(total, 2),
    }


def _between(a, b) -> dict[str, Any]:
    rel = [
        abs(b.entries[k].median_ms - s.median_ms) / s.median_ms
        for k, s in a.entries.items()
        if s.n and s.median_ms > 0 and k in b.entries
    ]
    ta = sum(s.median_ms for s in a.entries.values())
    tb = sum(s.median_ms for s in b.entries.values())
    return {
        "rel_diff_median": statistics.median(rel),
        "rel_diff_p90": quantile(rel, 0.9),
        "rel_diff_max": max(rel),
        "total_rel_diff": abs(tb - ta) / ta,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from densenas_core.latency import profile_space

    p = QUICK if getattr(args, "quick", False) else FULL
    builds, loads = [], [load_snapshot()]
    tables = []
    for i in range(p["builds"]):
        last = [time.perf_counter()]

        def progress(
            done: int, total: int, sig: Any, last: list[float] = last, build: int = i + 1
        ) -> None:
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                loads.append(load_snapshot())
                print(f"   [latency_table] build {build}: {done}/{total} ops", flush=True)

        c0, t0 = time.process_time(), time.perf_counter()
        table = profile_space(
            p["space"],
            device="cpu",
            batch=p["batch"],
            input_size=p["input_size"],
            warmup=p["warmup"],
            repeats=p["repeats"],
            num_threads=THREADS,
            progress=progress,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tables.append(table)
        builds.append(
            {
                "build_wall_s": round(wall, 2),
                "build_cpu_s": round(cpu, 2),
                "timing_s": round(table.build_seconds or 0.0, 2),
                "entries": len(table),
                **{
                    k: round(v, 4) if isinstance(v, float) else v for k, v in _spread(table).items()
                },
            }
        )
    loads.append(load_snapshot())
    res = {
        "title": TITLE,
        **p,
        "threads": THREADS,
        "device": tables[0].device_name,
        "method": tables[0].method,
        "builds_detail": builds,
        "load": loads,
    }
    if len(tables) > 1:
        res["between_builds"] = {k: round(v, 4) for k, v in _between(*tables[:2]).items()}
    print("   [latency_table] CPU-time build", flush=True)
    res["cpu_time_build"] = _cpu_time_build(
        p["space"], p["input_size"], p["batch"], p["warmup"], p["repeats"]
    )
    loads.append(load_snapshot())
    return res


def markdown(res: dict[str, Any]) -> str:
    b = res["builds_detail"]
    lines = [
        f'`profile_space("{res["space"]}", device="cpu", batch={res["batch"]}, '
        f"input_size={res['input_size']}, warmup={res['warmup']}, repeats={res['repeats']}, "
        f"num_threads={res['threads']})` on {res['device']} ({res['method']}), built "
        f"{len(b)}× back to back. Skip entries are recorded as 0 without timing.",
        "",
        "| build | entries (timed) | wall s | CPU s | median p90/p10 | p90 of p90/p10 "
        "| median CV | p90 CV | Σ medians ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, x in enumerate(b, 1):
        lines.append(
            f"| {i} | {x['entries']} ({x['entries_timed']}) | {x['build_wall_s']} | "
            f"{x['build_cpu_s']} | {x['p90_p10_median']:.3f} | {x['p90_p10_p90']:.3f} "
            f"| {x['cv_median']:.3f} | {x['cv_p90']:.3f} | {x['total_median_ms']:.1f} |"
        )
    if "between_builds" in res:
        bb = res["between_builds"]
        lines += [
            "",
            f"Between the two builds, per-op medians moved by "
            f"{100 * bb['rel_diff_median']:.1f} % (median over ops; p90 "
            f"{100 * bb['rel_diff_p90']:.1f} %, max {100 * bb['rel_diff_max']:.0f} %); "
            f"the sum of all medians by {100 * bb['total_rel_diff']:.1f} %.",
        ]
    if "cpu_time_build" in res:
        c = res["cpu_time_build"]
        lines += [
            "",
            "For contrast, the same op modules and shapes timed by **thread CPU time** "
            "(bench-local timer, same warm-up/runs; not what the table stores): median "
            f"p90/p10 {c['p90_p10_median']:.3f} (p90 {c['p90_p10_p90']:.3f}), median CV "
            f"{c['cv_median']:.3f} (p90 {c['cv_p90']:.3f}), Σ medians "
            f"{c['total_median_ms']:.1f} ms, {c['build_cpu_s']} CPU s in "
            f"{c['build_wall_s']} wall s. The gap to the wall-clock figures above is the "
            "time other processes held the cores while an op was being timed.",
        ]
    note = shared_note(res.get("load", []))
    if note:
        lines += [
            "",
            note + " Wall build time includes waiting for the cores; CPU s is the "
            "process's own CPU time.",
        ]
    return "\n".join(lines)

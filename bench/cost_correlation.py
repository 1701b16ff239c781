"""Chained vs local cost estimation against real costs (supplementary A.5; docs/algorithm.md
§Local cost).

Protocol (the paper's): draw architecture parameters at random, α, β ~ N(0, σ²) for a few σ
(small σ: nearly uniform distributions; large σ: peaked ones, and the derived nets span cheap to
expensive). For each draw:

* **predicted**: the chained estimate (``cost.chained_cost``) and the local estimate
  (``cost.local_cost``) computed from softmax(α) and the path probabilities softmax(β), with a
  FLOPs table (``flops_table``) and with a CPU latency table (``profile_space``);
* **real**: the architecture *derived* from the same α/β (Viterbi + argmax,
  ``derive_architecture``) is built and its mult-adds counted (``arch_summary``) and its CPU
  latency measured (``measure_network_latency``, one pinned thread, median).

Both estimators predict the expected cost of the supernet's *distribution*; the paper compares
that prediction to the derived model's real value, and so do we. The gap between the two is part
of what is measured (it shrinks as σ grows and the distribution concentrates on the derived net).
As a reference we also give the table's own error: the latency table summed over the derived
net's ops (``predict_latency``) vs its measured latency.

The machine may be shared (see the load note): wall-clock latencies of the ops and of the nets are
then noisy. The mbv2-small run therefore also times the same modules in **CPU time** (thread CPU
time per forward, bench-local timer; tables and nets alike), which removes most of the noise from
other processes, so estimator error and measurement noise can be told apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .common import RESULTS
from .timing import load_snapshot, shared_note

TITLE = "Cost estimation: chained vs local vs real (supplementary A.5)"
GOAL_PEARSON = 0.97
THREADS = int(os.environ.get("BENCH_THREADS", "1"))

#: sets: (space, input size, classes, sigmas, nets per sigma, net warm-up, net repeats,
#:        table warm-up, table repeats, also CPU-time timing)
FULL = {
    "sets": [
        {
            "space": "mbv2-small",
            "input_size": 32,
            "num_classes": 10,
            "sigmas": [0.5, 1.0, 2.0, 4.0, 8.0],
            "per_sigma": 48,
            "warmup": 10,
            "repeats": 30,
            "t_warmup": 10,
            "t_repeats": 30,
            "cpu_time": True,
        },
        {
            "space": "mbv2-imagenet",
            "input_size": 224,
            "num_classes": 1000,
            "sigmas": [1.0, 4.0, 8.0],
            "per_sigma": 14,
            "warmup": 3,
            "repeats": 10,
            "t_warmup": 5,
            "t_repeats": 15,
            "cpu_time": True,
        },
    ]
}
QUICK = {
    "sets": [
        {
            "space": "mbv2-small",
            "input_size": 32,
            "num_classes": 10,
            "sigmas": [1.0, 4.0],
            "per_sigma": 10,
            "warmup": 3,
            "repeats": 7,
            "t_warmup": 2,
            "t_repeats": 5,
            "cpu_time": True,
            "mc": 16,
        },
    ]
}
PNG = "cost_correlation.png"

PAIRS = [  # (label, predicted key, real key)
    ("chained FLOPs vs counted FLOPs", "chained_flops", "flops"),
    ("local FLOPs vs counted FLOPs", "local_flops", "flops"),
    ("chained FLOPs vs mean FLOPs of sampled nets", "chained_flops", "mc_flops"),
    ("local FLOPs vs mean FLOPs of sampled nets", "local_flops", "mc_flops"),
    ("chained latency vs measured", "chained_lat", "lat"),
    ("local latency vs measured", "local_lat", "lat"),
    ("table sum of derived net vs measured", "table_lat", "lat"),
    ("chained latency (CPU time) vs measured (CPU time)", "chained_cpu", "cpu"),
    ("local latency (CPU time) vs measured (CPU time)", "local_cpu", "cpu"),
    ("table sum (CPU time) vs measured (CPU time)", "table_cpu", "cpu"),
]


def _log(msg: str) -> None:
    print(f"   [cost_correlation] {msg}", flush=True)


# -- CPU-time timer (bench-local; the library's timers are wall clock) -----------------------


def _cpu_times(module: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> float:
    """Minimum thread CPU time (ms) of ``module(x)`` in eval / inference mode.

    CPU time leaves out the time other processes hold the core, but not the cache and
    memory-bandwidth interference they cause, which only ever adds time: the minimum over the
    runs is the least disturbed one."""
    module.eval()
    out = []
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        for _ in range(repeats):
            t0 = time.thread_time_ns()
            module(x)
            out.append((time.thread_time_ns() - t0) / 1e6)
    return min(out)


class _CpuTable:
    """A ``.get(op, c_in, c_out, stride, h, w)`` lookup of per-op CPU-time minima."""

    def __init__(
        self, space: Any, input_size: int, num_classes: int, warmup: int, repeats: int
    ) -> None:
        from densenas_core.latency import build_sig_module, space_op_signatures

        self.entries: dict[tuple, float] = {}
        act = space.stem.act
        for sig in space_op_signatures(space, input_size, num_classes=num_classes):
            key = (sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)
            if sig.op == "skip":
                self.entries[key] = 0.0
                continue
            m = build_sig_module(sig, act)
            x = torch.randn(1, sig.c_in, sig.h, sig.w)
            self.entries[key] = _cpu_times(m, x, warmup, repeats)

    def get(self, op: str, c_in: int, c_out: int, stride: int, h: int, w: int) -> float:
        return self.entries[(op, c_in, c_out, stride, h, w)]


# -- statistics ----------------------------------------------------------------------------


def _corr(pred: list[float], real: list[float]) -> dict[str, Any]:
    from scipy import stats

    if len(pred) < 3 or len(set(pred)) < 2 or len(set(real)) < 2:
        return {"n": len(pred), "pearson": None, "spearman": None}
    p = stats.pearsonr(pred, real)
    s = stats.spearmanr(pred, real)
    rel = [abs(a - b) / b for a, b in zip(pred, real) if b]
    return {
        "n": len(pred),
        "pearson": round(float(p.statistic), 4),
        "spearman": round(float(s.statistic), 4),
        "mean_abs_rel_err": round(statistics.mean(rel), 4) if rel else None,
    }


def _draw(g: Any, space: Any, sigma: float, gen: torch.Generator):
    n_a, n_l = len(g.align_paths), len(g.layer_block)
    a = sigma * torch.randn(n_a, len(space.align_ops), generator=gen, dtype=torch.float64)
    la = sigma * torch.randn(n_l, len(space.layer_ops), generator=gen, dtype=torch.float64)
    beta = [
        (sigma * torch.randn(len(space.out_paths[i]), generator=gen, dtype=torch.float64)).tolist()
        for i in range(g.beta_rows)
    ]
    return a, la, beta


def _sampled_flops(
    space: Any, g: Any, ap, lp, pp, gen: torch.Generator, res: int, nc: int, k: int
) -> float:
    """Mean counted mult-adds (M) of ``k`` nets drawn from the distribution itself: walk the
    block DAG from the stem by the path probabilities, pick every op by softmax(α). This is
    the quantity both estimators target (the chained one exactly)."""
    from densenas_core.arch import arch_summary, architecture_from_choices

    out_k = [[q for q in range(len(g.paths)) if g.path_src[q] == b] for b in range(g.tail)]
    total = 0.0
    for _ in range(k):
        b, path, align, layers = 0, [0], {}, {}
        while b != g.tail:
            ks = out_k[b]
            q = ks[int(torch.multinomial(pp[ks], 1, generator=gen))]
            j = g.path_dst[q]
            if j != g.tail:
                align[(b, j)] = space.align_ops[
                    int(torch.multinomial(ap[g.path_row[q]], 1, generator=gen))
                ]
                layers[j] = [
                    space.layer_ops[int(torch.multinomial(lp[r], 1, generator=gen))]
                    for r in g.block_layers[j]
                ]
            path.append(j)
            b = j
        arch = architecture_from_choices(space, path, align, layers, num_classes=nc, input_size=res)
        total += arch_summary(arch, res, nc)["mult_adds"] / 1e6
    return total / k


def _one_set(cfg: dict[str, Any], seed: int, loads: list) -> dict[str, Any]:
    from densenas_core.arch import arch_summary, build_network
    from densenas_core.cost import (
        chained_cost,
        choice_probs,
        flops_table,
        latency_table,
        local_cost,
        space_graph,
    )
    from densenas_core.derive import beta_path_probs, derive_architecture, derive_choices
    from densenas_core.latency import measure_network_latency, predict_latency, profile_space
    from densenas_core.spaces import get_space

    space = get_space(cfg["space"])
    g = space_graph(space)
    res, nc = cfg["input_size"], cfg["num_classes"]
    t0 = time.perf_counter()
    ft = flops_table(space, res, nc)
    _log(f"{space.name}: profiling the latency table (batch 1, {res} px)")
    table = profile_space(
        space,
        device="cpu",
        batch=1,
        input_size=res,
        num_classes=nc,
        warmup=cfg["t_warmup"],
        repeats=cfg["t_repeats"],
        num_threads=THREADS,
    )
    lt = latency_table(space, table, res, nc)
    cpu_table = ct = None
    if cfg["cpu_time"]:
        _log(f"{space.name}: profiling the CPU-time table")
        with _threads(THREADS):
            cpu_table = _CpuTable(space, res, nc, cfg["t_warmup"], cfg["t_repeats"])
        ct = latency_table(space, cpu_table, res, nc)
    tables_s = time.perf_counter() - t0
    loads.append(load_snapshot())

    gen = torch.Generator().manual_seed(seed)
    mc_gen = torch.Generator().manual_seed(seed + 1)
    rows: list[dict[str, Any]] = []
    consistency = 0.0
    t1 = time.perf_counter()
    # draw every α/β first (σ by σ, reproducible), then measure them in a shuffled order so
    # that drift of a shared machine over the run does not line up with σ
    draws = [
        (sigma, _draw(g, space, sigma, gen))
        for sigma in cfg["sigmas"]
        for _ in range(cfg["per_sigma"])
    ]
    order = torch.randperm(len(draws), generator=torch.Generator().manual_seed(seed + 2))
    for n_done, di in enumerate(order.tolist(), start=1):
        sigma, (a, la, beta) = draws[di]
        ap, lp = a.softmax(-1), la.softmax(-1)
        pp = torch.tensor(beta_path_probs(g, beta), dtype=torch.float64)
        alpha = a.tolist() + la.tolist()
        doc = derive_architecture(space, alpha, beta, input_size=res, num_classes=nc)
        row = {
            "sigma": sigma,
            "chained_flops": float(chained_cost(g, ft, ap, lp, pp)),
            "local_flops": float(local_cost(g, ft, ap, lp, pp)),
            "chained_lat": float(chained_cost(g, lt, ap, lp, pp)),
            "local_lat": float(local_cost(g, lt, ap, lp, pp)),
            "flops": arch_summary(doc, res, nc)["mult_adds"] / 1e6,
            "mc_flops": _sampled_flops(space, g, ap, lp, pp, mc_gen, res, nc, cfg.get("mc", 64)),
            "table_lat": predict_latency(doc, table),
        }
        # the FLOPs table and the closed-form count must agree on the derived net itself
        path, al, ly = derive_choices(space, alpha, beta)
        one_hot = choice_probs(g, path, al, ly)
        consistency = max(consistency, abs(float(chained_cost(g, ft, *one_hot)) - row["flops"]))
        model = build_network(doc)
        m = measure_network_latency(
            model,
            (1, 3, res, res),
            device="cpu",
            warmup=cfg["warmup"],
            repeats=cfg["repeats"],
            num_threads=THREADS,
        )
        row["lat"] = m["median_ms"]
        row["lat_p10"], row["lat_p90"] = m["p10_ms"], m["p90_ms"]
        if cpu_table is not None:
            row["chained_cpu"] = float(chained_cost(g, ct, ap, lp, pp))
            row["local_cpu"] = float(local_cost(g, ct, ap, lp, pp))
            row["table_cpu"] = predict_latency(doc, cpu_table)
            with _threads(THREADS):
                row["cpu"] = _cpu_times(
                    model, torch.randn(1, 3, res, res), cfg["warmup"], cfg["repeats"]
                )
        row["depth"] = sum(len(b["layers"]) for b in doc["blocks"])
        row["blocks"] = len(doc["blocks"])
        row["draw"] = di
        rows.append({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
        if n_done % cfg["per_sigma"] == 0 or n_done == len(draws):
            loads.append(load_snapshot())
            _log(f"{space.name}: {n_done}/{len(draws)} nets ({time.perf_counter() - t1:.0f} s)")

    def corr_for(sub: list[dict[str, Any]]) -> dict[str, Any]:
        out = {}
        for label, pk, rk in PAIRS:
            if sub and pk in sub[0] and rk in sub[0]:
                out[label] = _corr([r[pk] for r in sub], [r[rk] for r in sub])
        return out

    return {
        "space": space.name,
        "input_size": res,
        "num_classes": nc,
        "sigmas": cfg["sigmas"],
        "per_sigma": cfg["per_sigma"],
        "nets": len(rows),
        "net_timing": {"warmup": cfg["warmup"], "repeats": cfg["repeats"]},
        "table_timing": {
            "warmup": cfg["t_warmup"],
            "repeats": cfg["t_repeats"],
            "entries": len(table),
        },
        "tables_s": round(tables_s, 1),
        "nets_s": round(time.perf_counter() - t1, 1),
        "flops_table_vs_count_max_abs_diff_M": consistency,
        "correlations": corr_for(rows),
        "by_sigma": {str(s): corr_for([r for r in rows if r["sigma"] == s]) for s in cfg["sigmas"]},
        "ranges": {
            k: [min(r[k] for r in rows), max(r[k] for r in rows)]
            for k in ("flops", "lat", "chained_flops", "local_flops")
            if rows
        },
        "rows": rows,
    }


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.before)


def _plot(sets: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("chained_flops", "flops", "chained FLOPs (M)", "counted FLOPs (M)"),
        ("local_flops", "flops", "local FLOPs (M)", "counted FLOPs (M)"),
        ("chained_lat", "lat", "chained latency (ms)", "measured latency (ms)"),
        ("local_lat", "lat", "local latency (ms)", "measured latency (ms)"),
    ]
    if all("cpu" in s["rows"][0] for s in sets if s["rows"]):
        panels += [
            (
                "chained_cpu",
                "cpu",
                "chained latency, CPU-time table (ms)",
                "measured CPU time (ms)",
            ),
            ("local_cpu", "cpu", "local latency, CPU-time table (ms)", "measured CPU time (ms)"),
        ]
    fig, axes = plt.subplots(
        len(sets), len(panels), figsize=(4.0 * len(panels), 3.9 * len(sets)), squeeze=False
    )
    for si, s in enumerate(sets):
        rows = s["rows"]
        sigmas = s["sigmas"]
        cmap = plt.get_cmap("viridis", max(len(sigmas), 2))
        for pi, (pk, rk, xl, yl) in enumerate(panels):
            ax = axes[si][pi]
            for ci, sg in enumerate(sigmas):
                sub = [r for r in rows if r["sigma"] == sg]
                ax.scatter(
                    [r[pk] for r in sub],
                    [r[rk] for r in sub],
                    s=9,
                    alpha=0.75,
                    color=cmap(ci),
                    label=f"σ={sg}",
                )
            xs = [r[pk] for r in rows] + [r[rk] for r in rows]
            lo, hi = min(xs), max(xs)
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
            label = next(lab for lab, a, b in PAIRS if a == pk and b == rk)
            c = s["correlations"].get(label, {})
            ax.set_title(
                f"{s['space']} @{s['input_size']}: r={_f(c.get('pearson'))}, "
                f"ρ={_f(c.get('spearman'))}",
                fontsize=9,
            )
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.tick_params(labelsize=7)
            if pi == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if getattr(args, "quick", False) else FULL
    loads = [load_snapshot()]
    sets = [_one_set(cfg, seed=1234 + i, loads=loads) for i, cfg in enumerate(plan["sets"])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / PNG
    _plot(sets, png)
    main = sets[0]["correlations"]["chained FLOPs vs counted FLOPs"]["pearson"]
    return {
        "title": TITLE,
        "threads": THREADS,
        "goal_pearson": GOAL_PEARSON,
        "png": PNG,
        "sets": sets,
        "load": loads,
        "goal_met_flops": main is not None and main >= GOAL_PEARSON,
    }


def _f(v: Any) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(res: dict[str, Any]) -> str:
    g = res["goal_pearson"]
    lines = [
        "Protocol (supplementary A.5): α, β ~ N(0, σ²) for each σ; from the same α/β, the "
        "chained and the local estimate of the cost (FLOPs table; CPU latency table at batch 1, "
        "built by `profile_space` in the same run) vs the *derived* architecture's real cost: "
        "mult-adds counted in closed form (`arch_summary`) and CPU latency measured end to end "
        "(`measure_network_latency`, batch 1, "
        f"{res['threads']} pinned thread(s), median). Both estimators predict the expected cost "
        "of the sampling distribution; like the paper we compare it with the derived (argmax) "
        "network, so at small σ (near-uniform α/β) part of the error is the distribution/argmax "
        "gap, not the estimator. `table sum` = the latency table summed over the derived net's "
        "own ops (the table's error alone, no estimator). Pearson r / Spearman ρ by "
        f"`scipy.stats`; mean |pred − real| / real as MARE. Goal: chained Pearson ≥ {g} "
        "(vs the derived net). Reference rows `mean FLOPs of sampled nets`: the average "
        "counted mult-adds of nets drawn from the distribution itself (walk the block DAG by "
        "p, ops by softmax α) — the quantity the chained estimator computes exactly, which "
        "separates estimator error from the distribution-vs-argmax gap.",
        "",
        f"![scatter](bench/results/{res['png']})",
        "",
    ]
    for s in res["sets"]:
        lines += [
            f"### {s['space']} @ {s['input_size']} px, {s['num_classes']} classes: {s['nets']} "
            f"nets (σ ∈ {s['sigmas']}, {s['per_sigma']} each)",
            "",
            f"Latency table: {s['table_timing']['entries']} entries (warm-up "
            f"{s['table_timing']['warmup']}, {s['table_timing']['repeats']} runs); nets: warm-up "
            f"{s['net_timing']['warmup']}, {s['net_timing']['repeats']} runs. Counted FLOPs span "
            f"{s['ranges']['flops'][0]:.1f}–{s['ranges']['flops'][1]:.1f} M, measured latency "
            f"{s['ranges']['lat'][0]:.2f}–{s['ranges']['lat'][1]:.2f} ms. FLOPs table on the "
            f"derived net itself vs closed-form count: max |Δ| = "
            f"{s['flops_table_vs_count_max_abs_diff_M']:.2e} M.",
            "",
            "| prediction vs real | n | Pearson r | Spearman ρ | MARE | goal |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for label, c in s["correlations"].items():
            goal = ""
            if label.startswith("chained") and "sampled" not in label:
                goal = "met" if c["pearson"] is not None and c["pearson"] >= g else "**missed**"
            lines.append(
                f"| {label} | {c['n']} | {_f(c['pearson'])} | {_f(c['spearman'])} "
                f"| {_f(c.get('mean_abs_rel_err'))} | {goal} |"
            )
        lines += [
            "",
            "Pearson r by σ (chained / local):",
            "",
            "| σ | FLOPs chained | FLOPs local | FLOPs chained vs sampled mean "
            "| latency chained | latency local |"
            + (" CPU-time chained | CPU-time local |" if "cpu" in s["rows"][0] else ""),
            "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if "cpu" in s["rows"][0] else ""),
        ]
        for sg, cs in s["by_sigma"].items():
            keys = [
                "chained FLOPs vs counted FLOPs",
                "local FLOPs vs counted FLOPs",
                "chained FLOPs vs mean FLOPs of sampled nets",
                "chained latency vs measured",
                "local latency vs measured",
            ]
            if "cpu" in s["rows"][0]:
                keys += [
                    "chained latency (CPU time) vs measured (CPU time)",
                    "local latency (CPU time) vs measured (CPU time)",
                ]
            lines.append(
                f"| {sg} | " + " | ".join(_f(cs.get(k, {}).get("pearson")) for k in keys) + " |"
            )
        lines.append("")
    note = shared_note(res.get("load", []))
    if note:
        lines += [
            note + " Wall-clock latencies (op table and nets) absorb that noise; the "
            "CPU-time rows and columns time the same modules (ops and nets) by thread "
            "CPU time, "
            "minimum over the runs (see `_cpu_times`).",
            "",
        ]
    if res.get("notes"):
        lines += [res["notes"], ""]
    return "\n".join(lines)

"""Search steps of the supernet vs the same sub-network frozen into a static module (CPU).

For each configuration (space, input size, batch) one process builds the search state of
``densenas_core.search`` (supernet, SGD for weights, masked AdamW for α/β, FLOPs cost table)
and times, interleaved round by round (see :mod:`bench.timing`):

* ``supernet_weight``: the search loop's weight step — sample one op per row, forward, CE,
  backward, SGD step (``_Search.weight_step``, exactly what ``run_search`` runs);
* ``frozen_weight``: the training step of the *same* sampled sub-network frozen with
  ``SuperNet.freeze`` into a static module (same op modules and weights, every path, fixed path
  weights, no sampling, no α/β) — forward, CE, backward, SGD over its own parameters (sharing
  the search optimizer's momentum buffers);
* ``supernet_arch``: the arch step — two ops per row by softmax(α), CE + chained cost term,
  gradients w.r.t. α/β, masked AdamW, re-balancing (``_Search.arch_step``);
* ``frozen2_weight``: reference for the arch step: the training step of the two-op sub-network
  of that round's arch sample, frozen (same ops, fixed mixing weights);
* ``child``: the training step of the network derived from the supernet (``export()`` →
  ``build_network``; a stand-alone single-path network, BN affine).

Each round draws a new sub-network (seeded), so the supernet/frozen ratio is taken round by
round on identical sub-networks. GFLOP/s use mult-adds counted by forward hooks on the
sub-network (``count_flops_params``) × batch × 2 FLOPs per mult-add × 3 (backward ≈ 2×
forward);
the same convention for every variant (the arch step computes no weight gradients, so it does
less work than the convention credits it with).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from torch.nn import functional as F

from .timing import interleave, load_snapshot, paired_ratio, shared_note, summary

TITLE = "Search step: supernet vs frozen sub-network vs derived child (CPU)"
GOAL_RATIO = 1.10

#: (space, input size, batch, classes, warm-up rounds, timed rounds). One mbv2-imagenet round
#: at 224 px / batch 32 costs ~4 CPU-minutes on this machine (and ~15 GB peak RSS in the 2-op
#: variants), so it gets 1 warm-up + 3 timed rounds; CPU-time ratios are stable to ~±5 % there.
FULL = {"configs": [("mbv2-small", 32, 32, 10, 3, 5), ("mbv2-imagenet", 224, 32, 100, 1, 3)]}
QUICK = {"configs": [("mbv2-small", 32, 8, 10, 1, 3), ("mbv2-imagenet", 96, 8, 100, 1, 2)]}
#: intra-op threads while timing (1: stable on a shared 2-core machine; see ENVIRONMENT.md)
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def _log(msg: str) -> None:
    print(f"   [core_step] {msg}", flush=True)


def _search_state(space: str, input_size: int, batch: int, num_classes: int):
    from densenas_core.search import SearchConfig, _Search

    cfg = SearchConfig(space=space, dataset={"name": "synthetic"}, batch_size=batch, seed=0)
    meta = {"num_classes": num_classes, "input_size": input_size, "in_channels": 3}
    return _Search(cfg, meta, torch.device("cpu"), None)


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y,
                clip: float | None = None) -> float:
    model.train()
    opt.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if clip is not None:  # the search's weight step clips; the static steps do the same work
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                       clip)
    opt.step()
    int((logits.detach().argmax(1) == y).sum())  # the search step computes accuracy too
    return float(loss.detach())


def _gflops(mult_adds_per_image: float, batch: int, ms: float) -> float:
    return mult_adds_per_image * batch * 2 * 3 / (ms / 1e3) / 1e9


def measure(space: str, input_size: int, batch: int, num_classes: int, *, warmup: int,
            repeats: int) -> dict[str, Any]:
    from densenas_core.arch import arch_summary, build_network
    from densenas_core.flops import count_flops_params

    from densenas_core import search as search_mod

    torch.manual_seed(0)
    run = _search_state(space, input_size, batch, num_classes)
    net = run.net
    x = torch.randn(batch, 3, input_size, input_size)
    y = torch.randint(0, num_classes, (batch,))
    if hasattr(run, "inputs"):  # the search loop's own input preparation (memory format)
        x, y = run.inputs(x, y)
    fmt = getattr(run, "memory_format", torch.contiguous_format)
    clip = getattr(search_mod, "W_GRAD_CLIP", None)
    lr = 0.05

    child_doc = net.export(num_classes=num_classes)
    child = build_network(child_doc, num_classes=num_classes, input_size=input_size)
    child.to(memory_format=fmt)  # as run_retrain does on the CPU
    child_opt = torch.optim.SGD(child.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
    child_ma = arch_summary(child_doc, input_size, num_classes)["mult_adds"]

    cur: dict[str, Any] = {}
    macs = {"weight": [], "arch": []}

    def gen(r: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(1000 * salt + r)

    def setup(r: int) -> None:
        # the weight step re-draws its sample from gen(r, 1): same seed, same α → same ops
        s1 = net.sample(gen(r, 1), k=1)
        s2 = net.sample(gen(r, 2), k=2, arch=True)
        f1, f2 = net.freeze(s1), net.freeze(s2)
        o1 = torch.optim.SGD(f1.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
        o1.state = run.w_opt.state  # continue the search's momentum buffers
        o2 = torch.optim.SGD(f2.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
        o2.state = run.w_opt.state
        cur.update(f1=f1, f2=f2, o1=o1, o2=o2)
        macs["weight"].append(count_flops_params(f1, (3, input_size, input_size))[0])
        macs["arch"].append(count_flops_params(f2, (3, input_size, input_size))[0])

    variants = {
        "supernet_weight": lambda r: run.weight_step(x, y, gen(r, 1), lr, False, None),
        "frozen_weight": lambda r: _train_step(cur["f1"], cur["o1"], x, y, clip),
        "supernet_arch": lambda r: run.arch_step(x, y, gen(r, 2), None),
        "frozen2_weight": lambda r: _train_step(cur["f2"], cur["o2"], x, y, clip),
        "child": lambda r: _train_step(child, child_opt, x, y, clip),
    }
    loads = [load_snapshot()]
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        samples = interleave(variants, warmup=warmup, repeats=repeats, setup=setup,
                             progress=lambda m: (_log(f"{space}@{input_size} b{batch} {m}"),
                                                 loads.append(load_snapshot())))
    wall = time.perf_counter() - t0
    ma_w = statistics.mean(macs["weight"][warmup:])
    ma_a = statistics.mean(macs["arch"][warmup:])
    per_image = {"supernet_weight": ma_w, "frozen_weight": ma_w, "supernet_arch": ma_a,
                 "frozen2_weight": ma_a, "child": child_ma}
    steps = {}
    for name, xs in samples.items():
        st = {"wall": summary(xs["wall"]), "cpu": summary(xs["cpu"])}
        st["mult_adds_per_image_M"] = round(per_image[name] / 1e6, 2)
        for clock in ("wall", "cpu"):
            st[f"gflops_{clock}"] = round(_gflops(per_image[name], batch,
                                                  st[clock]["median_ms"]), 2)
        steps[name] = st
    pairs = [("supernet_weight", "frozen_weight"), ("supernet_arch", "frozen2_weight"),
             ("supernet_arch", "supernet_weight"), ("supernet_weight", "child")]
    return {
        "space": space, "input_size": input_size, "batch": batch, "num_classes": num_classes,
        "warmup": warmup, "repeats": repeats, "wall_s": round(wall, 1),
        "memory_format": str(fmt).replace("torch.", ""), "grad_clip": clip,
        "steps": steps,
        "ratios": {clock: {f"{a}/{b}": paired_ratio(samples[a][clock], samples[b][clock])
                           for a, b in pairs} for clock in ("cpu", "wall")},
        "child": {"name": child_doc.get("name"), "depth": len(child_doc.get("blocks", [])),
                  "mult_adds_M": round(child_ma / 1e6, 2)},
        "load": loads,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if getattr(args, "quick", False) else FULL
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        results = [measure(*c[:4], warmup=c[4], repeats=c[5]) for c in plan["configs"]]
    finally:
        torch.set_num_threads(before)
    worst = max(r["ratios"]["cpu"]["supernet_weight/frozen_weight"]["median"] for r in results)
    return {"title": TITLE, "threads": THREADS, "goal_ratio": GOAL_RATIO,
            "goal_met": worst <= GOAL_RATIO, "configs": results}


def _fmt_ratio(r: dict[str, Any]) -> str:
    return f"{r['median']:.3f} (p10–p90 {r['p10']:.2f}–{r['p90']:.2f})"


_LABELS = {"supernet_weight": "supernet weight", "frozen_weight": "frozen weight",
           "supernet_arch": "supernet arch", "frozen2_weight": "frozen 2-op", "child": "child"}


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"CPU, {res['threads']} intra-op thread(s), float32, synthetic inputs, memory format "
        f"{res['configs'][0].get('memory_format', 'contiguous_format')} (what the search loop "
        "uses; the shared modules and the child get the same), gradient-norm clip "
        f"{res['configs'][0].get('grad_clip')} in every step that updates weights (the search's "
        "weight step clips; the static steps do the same optimizer work). Each round draws "
        "a new sampled sub-network; the variants run interleaved in one process (order rotated "
        "every round), so ratios are taken round by round on identical sub-networks (median of "
        "per-round ratios; p10–p90 in brackets). Two clocks: *CPU* = process CPU time "
        "(`time.process_time`; with one intra-op thread, the work the step did — robust to "
        "other processes holding the cores) and *wall* = `perf_counter`. The goal is judged on "
        "the CPU-time ratio; the wall ratio is shown beside it. GFLOP/s = mult-adds × batch × "
        "2 × 3 (fwd + bwd ≈ 3× fwd) / median step time, the same convention for every variant "
        "(mult-adds counted by forward hooks on the sampled sub-network).",
        "",
        "- `supernet weight`: `_Search.weight_step` — sample 1 op/row, fwd + bwd + SGD.",
        "- `frozen weight`: the same sample frozen by `SuperNet.freeze` (same modules and "
        "weights, all paths, no sampling/α/β), fwd + bwd + SGD.",
        "- `supernet arch`: `_Search.arch_step` — 2 ops/row, CE + chained cost, ∂/∂(α,β), "
        "masked AdamW, re-balance. `frozen 2-op`: that round's 2-op sample frozen and trained "
        "like a static network (its reference; it also computes weight gradients).",
        "- `child`: `build_network(supernet.export())`, the derived single-path network.",
        "",
    ]
    for c in res["configs"]:
        rc, rw = c["ratios"]["cpu"], c["ratios"]["wall"]
        main = rc["supernet_weight/frozen_weight"]
        met = "met" if main["median"] <= res["goal_ratio"] else "**MISSED**"
        lines += [
            f"### {c['space']} @ {c['input_size']} px, batch {c['batch']}, "
            f"{c['num_classes']} classes ({c['warmup']} warm-up + {c['repeats']} timed rounds)",
            "",
            "| step | M mult-adds/img | CPU ms median (p10–p90) | GFLOP/s (CPU) "
            "| wall ms median (p10–p90) | GFLOP/s (wall) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k, lab in _LABELS.items():
            s = c["steps"][k]
            cpu, wall = s["cpu"], s["wall"]
            lines.append(
                f"| {lab} | {s['mult_adds_per_image_M']} | {cpu['median_ms']:.0f} "
                f"({cpu['p10_ms']:.0f}–{cpu['p90_ms']:.0f}) | {s['gflops_cpu']} "
                f"| {wall['median_ms']:.0f} ({wall['p10_ms']:.0f}–{wall['p90_ms']:.0f}) "
                f"| {s['gflops_wall']} |")
        lines += ["", "| ratio | CPU time | wall time |", "|---|---:|---:|"]
        for key in rc:
            a, b = key.split("/")
            lines.append(f"| {_LABELS[a]} / {_LABELS[b]} | {_fmt_ratio(rc[key])} "
                         f"| {_fmt_ratio(rw[key])} |")
        lines += [
            "",
            f"Goal supernet weight step ≤ {res['goal_ratio']:.2f}× frozen (CPU time): "
            f"{main['median']:.3f}× — {met}. Derived child: {c['child']['depth']} blocks, "
            f"{c['child']['mult_adds_M']} M mult-adds. " + shared_note(c["load"]),
            "",
        ]
    if res.get("notes"):
        lines += [res["notes"], ""]
    return "\n".join(lines)

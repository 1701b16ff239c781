"""Search steps of the supernet vs the same sub-network frozen into a static module (CPU).

For each configuration (space, input size, batch, weight sharing) one process builds the search
state of ``densenas_core.search`` (supernet, SGD for weights, masked AdamW for α/β, FLOPs cost
table) and times, interleaved round by round (see :mod:`bench.timing`):

* ``supernet_weight``: the search loop's weight step — sample one op per row, forward, CE,
  backward, SGD step (``SearchSession.weight_step``, what ``run_search`` runs). Ops are drawn
  uniformly (``uniform=True``, as in the search's warm-up epochs) so that the sample does not
  depend on α, which the round's arch step may have moved before the weight step runs;
* ``frozen_weight``: the training step of the *same* sampled sub-network frozen with
  ``SuperNet.freeze`` into a static module (same op modules and weights, every path, fixed path
  weights, no sampling, no α/β) — forward, CE, backward, SGD over its own parameters (sharing
  the search optimizer's momentum buffers);
* ``supernet_arch``: the arch step — two ops per row by softmax(α), CE + chained cost term,
  ``torch.autograd.grad`` w.r.t. α/β only (no weight gradients), masked AdamW, re-balancing
  (``SearchSession.arch_step``);
* ``frozen2_grad``: reference for the arch step doing the same network work: that round's
  two-op sample as a static ``FrozenSubNet`` whose op-mixing and path weights are leaf tensors
  (the values the arch step computes from α/β), forward, CE and ``torch.autograd.grad`` w.r.t.
  those weights only — like the arch step, no weight gradients, no optimizer;
* ``child``: the training step of the network derived from the supernet (``export()`` →
  ``build_network``; a stand-alone single-path network, BN affine).

Each round draws a new sub-network (seeded), so the equal-work ratios are taken round by round
on identical sub-networks.

Work: forward FLOPs are counted on the round's sub-network (batch 1) with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, 2 FLOPs per mult-add;
the forward hooks of ``count_flops_params`` see ``nn.Conv2d`` modules only and miss the
entangled rows' functional convolutions). A step's work is forward FLOPs × batch × passes:
forward 1×, input-gradient backward ≈ 1×, weight-gradient backward ≈ 1× — 3 passes for steps
that compute weight gradients, 2 for the arch step and its reference.

The intra-op thread count is read every round inside the timing loop (before it is restored)
and reported as what the steps ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from .common import RESULTS
from .timing import interleave, load_snapshot, paired_ratio, quantile, shared_note, summary

TITLE = "Search step: supernet vs frozen sub-network vs derived child (CPU)"
GOAL_RATIO = 1.10

#: (space, input size, batch, classes, warm-up rounds, timed rounds, weight sharing); weight
#: sharing None = what the search resolves by default (entangled). One mbv2-imagenet round at
#: 224 px / batch 32 costs ~4 CPU-minutes on this machine and ~15 GB peak RSS, so it gets
#: 1 warm-up + 3 timed rounds; select configurations with ``--config`` (see :func:`selected`).
FULL = {
    "configs": [
        ("mbv2-small", 32, 32, 10, 3, 15, None),
        ("mbv2-small", 32, 32, 10, 3, 15, "separate"),
        ("mbv2-imagenet", 224, 32, 100, 1, 3, None),
    ]
}
QUICK = {
    "configs": [("mbv2-small", 32, 8, 10, 1, 3, None), ("mbv2-imagenet", 96, 8, 100, 1, 2, None)]
}
#: intra-op threads requested while timing (1: stable on a shared 2-core machine)
THREADS = int(os.environ.get("BENCH_THREADS", "1"))

VARIANTS = ("supernet_weight", "frozen_weight", "supernet_arch", "frozen2_grad", "child")
#: forward-equivalent passes of each step: forward + input-gradient backward (+ weight-gradient
#: backward where the step computes weight gradients)
PASSES = {
    "supernet_weight": 3,
    "frozen_weight": 3,
    "supernet_arch": 2,
    "frozen2_grad": 2,
    "child": 3,
}
#: (a, b, equal work, what a/b compares)
PAIRS = [
    (
        "supernet_weight",
        "frozen_weight",
        True,
        "overhead of the supernet's dispatch over the same modules (≈ 1 by construction)",
    ),
    (
        "supernet_arch",
        "frozen2_grad",
        True,
        "the arch step's own extras (sampling, α/β softmax and its backward, chained cost, masked "
        "AdamW, re-balance) over the same 2-op forward + input-gradient backward",
    ),
    (
        "supernet_arch",
        "supernet_weight",
        False,
        "an arch step vs a weight step of the search loop (2 ops/row, fwd + input grad vs "
        "1 op/row, fwd + input grad + weight grad)",
    ),
    (
        "supernet_weight",
        "child",
        False,
        "a search weight step vs a training step of the derived child (different networks)",
    ),
]


def _log(msg: str) -> None:
    print(f"   [core_step] {msg}", flush=True)


def label(c: Sequence[Any]) -> str:
    """``space@px/b<batch>/<sharing>`` of a plan entry (sharing ``default`` when None)."""
    return f"{c[0]}@{c[1]}/b{c[2]}/{c[6] or 'default'}"


def selected(configs: Sequence[Sequence[Any]], wanted: Sequence[str] | None):
    """The plan entries matching any of ``wanted``: a space name (``mbv2-small``), ``space@px``
    or a full :func:`label`. ``None``/empty selects all."""
    if not wanted:
        return list(configs)
    keys = set(wanted)
    out = [c for c in configs if c[0] in keys or f"{c[0]}@{c[1]}" in keys or label(c) in keys]
    if not out:
        raise SystemExit(
            f"core_step: --config {sorted(keys)} matches none of {[label(c) for c in configs]}"
        )
    return out


def _search_state(
    space: str, input_size: int, batch: int, num_classes: int, weight_sharing: str | None
):
    from densenas_core.search import SearchConfig, SearchSession

    cfg = SearchConfig(
        space=space,
        dataset={"name": "synthetic"},
        batch_size=batch,
        seed=0,
        weight_sharing=weight_sharing,
    )
    meta = {"num_classes": num_classes, "input_size": input_size, "in_channels": 3}
    return SearchSession(cfg, meta, torch.device("cpu"), None)


def _train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, x, y, clip: float | None = None
) -> float:
    model.train()
    opt.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    if clip is not None:  # the search's weight step clips; the static steps do the same work
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip)
    opt.step()
    int((logits.detach().argmax(1) == y).sum())  # the search step computes accuracy too
    return float(loss.detach())


def _grad_only_step(model: torch.nn.Module, leaves: list[torch.Tensor], x, y) -> float:
    """Forward, CE and the gradient w.r.t. ``leaves`` only (the arch step's network work)."""
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    torch.autograd.grad(loss, leaves)
    int((logits.detach().argmax(1) == y).sum())
    return float(loss.detach())


def _leaf_mix(w: list[Any]) -> tuple[list[Any], torch.Tensor | None]:
    """Per-row mixing weights as one leaf tensor (None rows stay None) and the per-row lists
    ``_run`` takes (0-dim tensors, as the arch step hands it)."""
    if not w or w[0] is None:
        return [None] * len(w), None
    leaf = torch.tensor(w, requires_grad=True)
    return [r.unbind(0) for r in leaf.unbind(0)], leaf


def _grad_reference(net, sample):
    """``sample`` (k = 2) as a ``FrozenSubNet`` whose mixing and path weights are leaf tensors,
    and those leaves."""
    from densenas_core.supernet import FrozenSubNet, Sample

    with torch.no_grad():
        ai, aw, li, lw, path_w = net._weights(Sample(sample.align, sample.layers, False))
    aw_t, a_leaf = _leaf_mix(aw)
    lw_t, l_leaf = _leaf_mix(lw)
    p_leaf = torch.tensor(list(path_w), requires_grad=True)
    ref = FrozenSubNet(net, ai, aw_t, li, lw_t, p_leaf.unbind(0))
    return ref, [t for t in (a_leaf, l_leaf, p_leaf) if t is not None]


def _forward_flops(
    model: torch.nn.Module, input_size: int, fmt: torch.memory_format = torch.contiguous_format
) -> int:
    """FLOPs of one forward pass for one image (convolutions + matmuls, 2 per mult-add),
    counted at the aten level so that functional convolutions (entangled rows) count too."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, input_size, input_size).contiguous(memory_format=fmt)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
    finally:
        model.train(was)
    return int(fc.get_total_flops())


def measure(
    space: str,
    input_size: int,
    batch: int,
    num_classes: int,
    *,
    warmup: int,
    repeats: int,
    weight_sharing: str | None = None,
) -> dict[str, Any]:
    from densenas_core import search as search_mod
    from densenas_core.arch import build_network

    torch.manual_seed(0)
    run = _search_state(space, input_size, batch, num_classes, weight_sharing)
    net = run.net
    sharing = run.schedule.weight_sharing
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
    child_fwd = _forward_flops(child, input_size, fmt)

    cur: dict[str, Any] = {}
    fwd: dict[str, list[int]] = {"weight": [], "arch": []}
    threads: list[int] = []

    def gen(r: int, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(1000 * salt + r)

    def setup(r: int) -> None:
        threads.append(torch.get_num_threads())  # what this round's steps run on
        # the weight step re-draws its sample from gen(r, 1) uniformly: the same ops; the arch
        # step re-draws from gen(r, 2) by softmax α, which only the arch step itself changes
        s1 = net.sample(gen(r, 1), k=1, uniform=True)
        s2 = net.sample(gen(r, 2), k=2, arch=True)
        f1 = net.freeze(s1)
        f2, leaves = _grad_reference(net, s2)
        o1 = torch.optim.SGD(f1.parameters(), lr=lr, momentum=0.9, weight_decay=4e-5)
        o1.state = run.w_opt.state  # continue the search's momentum buffers
        cur.update(f1=f1, o1=o1, f2=f2, leaves=leaves)
        fwd["weight"].append(_forward_flops(f1, input_size, fmt))
        fwd["arch"].append(_forward_flops(f2, input_size, fmt))

    variants = {
        "supernet_weight": lambda r: run.weight_step(x, y, gen(r, 1), lr, True, None),
        "frozen_weight": lambda r: _train_step(cur["f1"], cur["o1"], x, y, clip),
        "supernet_arch": lambda r: run.arch_step(x, y, gen(r, 2), None),
        "frozen2_grad": lambda r: _grad_only_step(cur["f2"], cur["leaves"], x, y),
        "child": lambda r: _train_step(child, child_opt, x, y, clip),
    }
    loads = [load_snapshot()]
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        samples = interleave(
            variants,
            warmup=warmup,
            repeats=repeats,
            setup=setup,
            progress=lambda m: (
                _log(f"{space}@{input_size} b{batch} {sharing} {m}"),
                loads.append(load_snapshot()),
            ),
        )
    wall = time.perf_counter() - t0
    per_round_fwd = {
        "supernet_weight": fwd["weight"][warmup:],
        "frozen_weight": fwd["weight"][warmup:],
        "supernet_arch": fwd["arch"][warmup:],
        "frozen2_grad": fwd["arch"][warmup:],
        "child": [child_fwd] * repeats,
    }
    # counted work of each timed round (FLOPs): forward FLOPs × batch × passes
    work = {n: [f * batch * PASSES[n] for f in per_round_fwd[n]] for n in VARIANTS}
    steps = {}
    for name in VARIANTS:
        xs = samples[name]
        st: dict[str, Any] = {"wall": summary(xs["wall"]), "cpu": summary(xs["cpu"])}
        st["mult_adds_per_image_M"] = round(statistics.mean(per_round_fwd[name]) / 2e6, 2)
        st["passes"] = PASSES[name]
        st["gflop_per_step"] = round(statistics.mean(work[name]) / 1e9, 3)
        for clock in ("wall", "cpu"):
            st[f"gflops_{clock}"] = round(
                statistics.median(w / (t / 1e3) / 1e9 for w, t in zip(work[name], xs[clock])), 2
            )
        steps[name] = st

    def per_work(name: str, clock: str) -> list[float]:
        return [t / w for t, w in zip(samples[name][clock], work[name])]

    ratios: dict[str, Any] = {}
    for a, b, equal, what in PAIRS:
        wr = [wa / wb for wa, wb in zip(work[a], work[b])]
        ratios[f"{a}/{b}"] = {
            "compares": what,
            "equal_work": equal,
            "work": {
                "median": statistics.median(wr),
                "p10": quantile(wr, 0.1),
                "p90": quantile(wr, 0.9),
            },
            **{
                clock: paired_ratio(samples[a][clock], samples[b][clock])
                for clock in ("cpu", "wall")
            },
            **{
                f"{clock}_per_flop": paired_ratio(per_work(a, clock), per_work(b, clock))
                for clock in ("cpu", "wall")
            },
        }
    return {
        "space": space,
        "input_size": input_size,
        "batch": batch,
        "num_classes": num_classes,
        "warmup": warmup,
        "repeats": repeats,
        "weight_sharing": sharing,
        "weight_sharing_requested": weight_sharing,
        "threads_seen": sorted(set(threads)),
        "wall_s": round(wall, 1),
        "memory_format": str(fmt).replace("torch.", ""),
        "grad_clip": clip,
        "steps": steps,
        "ratios": ratios,
        "child": {
            "name": child_doc.get("name"),
            "depth": len(child_doc.get("blocks", [])),
            "mult_adds_M": round(child_fwd / 2e6, 2),
        },
        "load": loads,
    }


def _previous(c: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Key figures of a configuration measured in an earlier run (old or current format)."""
    legacy = "weight_sharing" not in c  # written before entangled rows and these fixes
    rc = c.get("ratios", {})
    disp = (rc.get("cpu", {}) if legacy else rc).get("supernet_weight/frozen_weight", {})
    disp = disp if legacy else disp.get("cpu", {})
    return {
        "git": machine.get("git"),
        "date": machine.get("date"),
        "cpu": machine.get("cpu"),
        "legacy": legacy,
        "weight_sharing": "separate" if legacy else c["weight_sharing"],
        "warmup": c.get("warmup"),
        "repeats": c.get("repeats"),
        "cpu_median_ms": {
            k: round(s["cpu"]["median_ms"])
            for k, s in c["steps"].items()
            if k in ("supernet_weight", "frozen_weight", "supernet_arch", "child")
        },
        "dispatch_ratio_cpu": {k: disp[k] for k in ("median", "p10", "p90") if k in disp},
    }


def _not_run(skipped: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Configurations left out by ``--config``, with the figures of the last run that measured
    them (from ``bench/results/core_step.json``), marked as such."""
    try:
        old = json.loads((RESULTS / "core_step.json").read_text())
    except (OSError, ValueError):
        old = {}
    out = []
    for c in skipped:
        entry: dict[str, Any] = {
            "space": c[0],
            "input_size": c[1],
            "batch": c[2],
            "weight_sharing_requested": c[6],
            "previous": None,
        }
        for p in old.get("configs", []):
            if (p["space"], p["input_size"], p["batch"]) == tuple(c[:3]) and p.get(
                "weight_sharing_requested"
            ) == c[6]:
                entry["previous"] = _previous(p, old.get("machine", {}))
        for p in old.get("not_run", []):
            if (
                entry["previous"] is None
                and (p["space"], p["input_size"], p["batch"]) == tuple(c[:3])
                and p.get("weight_sharing_requested") == c[6]
            ):
                entry["previous"] = p.get("previous")
        out.append(entry)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if getattr(args, "quick", False) else FULL
    wanted = getattr(args, "config", None)
    configs = selected(plan["configs"], wanted)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        results = [measure(*c[:4], warmup=c[4], repeats=c[5], weight_sharing=c[6]) for c in configs]
    finally:
        torch.set_num_threads(before)
    seen = sorted({t for r in results for t in r["threads_seen"]})
    threads: int | list[int] = seen[0] if len(seen) == 1 else seen
    worst = max(r["ratios"]["supernet_weight/frozen_weight"]["cpu"]["median"] for r in results)
    out = {
        "title": TITLE,
        "threads": threads,
        "threads_requested": THREADS,
        "goal_ratio": GOAL_RATIO,
        "goal_met": worst <= GOAL_RATIO,
        "configs": results,
        # what the timed steps ran on (bench.__main__ lays this over the machine facts,
        # which are read after the thread count has been restored)
        "machine": {"torch_threads": threads},
    }
    if wanted:
        out["selected"] = list(wanted)
        out["not_run"] = _not_run([c for c in plan["configs"] if c not in configs])
    return out


def _fmt_ratio(r: dict[str, Any]) -> str:
    return f"{r['median']:.3f} ({r['p10']:.2f}–{r['p90']:.2f})"


_LABELS = {
    "supernet_weight": "supernet weight",
    "frozen_weight": "frozen weight",
    "supernet_arch": "supernet arch",
    "frozen2_grad": "frozen 2-op grad-only",
    "child": "child",
}


def _threads_text(t: Any) -> str:
    return f"{t}" if isinstance(t, int) else "/".join(map(str, t)) + " (varied)"


def _previous_md(n: dict[str, Any]) -> list[str]:
    head = (
        f"### {n['space']} @ {n['input_size']} px, batch {n['batch']} — **not re-measured "
        "in this run**"
    )
    p = n.get("previous")
    if not p:
        return [head, "", "No figures: needs a run (`--config` left it out).", ""]
    if p.get("legacy"):
        src = (
            f"measured by the previous code version (git {p['git']}, {p['date']}, "
            f"{p.get('cpu') or 'CPU not recorded'}), before "
            "the fixes of this section (thread count, arch-step reference, FLOP counting) "
            "and with separate op weights (entangled rows did not exist yet)"
        )
    else:
        src = (
            f"measured at git {p['git']} ({p['date']}, {p.get('cpu') or 'CPU not recorded'})"
            f", weight sharing {p['weight_sharing']}"
        )
    ms = p.get("cpu_median_ms", {})
    d = p.get("dispatch_ratio_cpu", {})
    steps = ", ".join(f"{_LABELS.get(k, k)} {v / 1e3:.1f} s" for k, v in ms.items())
    line = (
        f"Previous figures, {src}; {p.get('warmup')} warm-up + {p.get('repeats')} timed "
        f"rounds: CPU time per step (median) {steps}"
    )
    if d:
        line += (
            f"; supernet weight / frozen weight (dispatch overhead over the same modules, "
            f"≈ 1 by construction) {_fmt_ratio(d)}"
        )
    line += (
        ". They are not comparable with the tables above (other code, other weight "
        "sharing); the current code needs a re-run of this configuration."
    )
    return [head, "", line, ""]


def markdown(res: dict[str, Any]) -> str:
    c0 = res["configs"][0]
    lines = [
        f"CPU, **{_threads_text(res['threads'])} intra-op thread(s) while timing** (read every "
        f"round inside the timing loop; requested {res.get('threads_requested', '?')}), "
        f"float32, synthetic inputs, memory format {c0.get('memory_format')} (what the search "
        "loop uses; the shared modules and the child get the same), gradient-norm clip "
        f"{c0.get('grad_clip')} in every step that updates weights. Each round draws a new "
        "sampled sub-network; the variants run interleaved in one process (order rotated every "
        "round), so ratios are taken round by round on identical sub-networks (median of "
        "per-round ratios; p10–p90 in brackets). Two clocks: *CPU* = process CPU time "
        "(`time.process_time`; with one intra-op thread, the work the step did — robust to "
        "other processes holding the cores) and *wall* = `perf_counter`. The goal is judged on "
        "the CPU-time ratio.",
        "",
        "Work: forward FLOPs of the round's sub-network counted by "
        "`torch.utils.flop_counter.FlopCounterMode` (convolutions + matmuls, 2 FLOPs per "
        "mult-add; `count_flops_params`' `nn.Conv2d` hooks miss the entangled rows' functional "
        "convolutions), × batch × passes: forward 1×, input-gradient backward ≈ 1×, "
        "weight-gradient backward ≈ 1× — **3 passes** for the steps that compute weight "
        "gradients (supernet weight, frozen weight, child), **2** for the arch step and its "
        "reference (no weight gradients). GFLOP/s = that work / step time (median over rounds).",
        "",
        "- `supernet weight`: `SearchSession.weight_step` — sample 1 op/row (uniformly, as in the "
        "search's warm-up epochs, so the sample does not depend on α, which the round's arch "
        "step may already have moved), fwd + bwd + clip + SGD.",
        "- `frozen weight`: the same sample frozen by `SuperNet.freeze` (same modules and "
        "weights, all paths, no sampling/α/β), fwd + bwd + clip + SGD.",
        "- `supernet arch`: `SearchSession.arch_step` — 2 ops/row by softmax α, CE + chained cost, "
        "`autograd.grad` w.r.t. α/β only (no weight gradients), masked AdamW, re-balance.",
        "- `frozen 2-op grad-only`: its reference — that round's 2-op sample as a static "
        "`FrozenSubNet` whose mixing and path weights are leaf tensors (same values), fwd + CE "
        "+ `autograd.grad` w.r.t. those weights only: the same network work as the arch step "
        "(forward + input-gradient backward through the same modules), without its extras.",
        "- `child`: `build_network(supernet.export())`, the derived single-path network, "
        "fwd + bwd + clip + SGD.",
        "",
        "Ratios: the first two compare equal work (same modules, same passes; counted work a/b "
        "= 1). The last two compare different work; their time ratio is what one step costs "
        "against the other, and the *per FLOP* column divides each round's times by that "
        "round's counted work, which puts them on equal work.",
        "",
    ]
    for c in res["configs"]:
        r = c["ratios"]
        main = r["supernet_weight/frozen_weight"]["cpu"]
        met = "met" if main["median"] <= res["goal_ratio"] else "**MISSED**"
        sharing = c.get("weight_sharing")
        how = (
            "the default: `SuperNet(entangled=True)`, the row's MBConv candidates slice one "
            "`MBKernel`"
            if sharing == "entangled" and not c.get("weight_sharing_requested")
            else f'`weight_sharing: "{sharing}"`'
        )
        lines += [
            f"### {c['space']} @ {c['input_size']} px, batch {c['batch']}, "
            f"{c['num_classes']} classes, weight sharing {sharing} "
            f"({c['warmup']} warm-up + {c['repeats']} timed rounds)",
            "",
            f"Weight sharing measured: {sharing} ({how}); threads seen while timing: "
            f"{c.get('threads_seen')}.",
            "",
            "| step | M mult-adds/img (fwd) | passes | GFLOP/step | CPU ms median (p10–p90) "
            "| GFLOP/s (CPU) | wall ms median (p10–p90) | GFLOP/s (wall) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, lab in _LABELS.items():
            s = c["steps"][k]
            cpu, wall = s["cpu"], s["wall"]
            lines.append(
                f"| {lab} | {s['mult_adds_per_image_M']} | {s['passes']} "
                f"| {s['gflop_per_step']:.2f} | {cpu['median_ms']:.0f} "
                f"({cpu['p10_ms']:.0f}–{cpu['p90_ms']:.0f}) | {s['gflops_cpu']} "
                f"| {wall['median_ms']:.0f} ({wall['p10_ms']:.0f}–{wall['p90_ms']:.0f}) "
                f"| {s['gflops_wall']} |"
            )
        lines += [
            "",
            "| ratio | what it compares | counted work a/b | CPU time a/b "
            "| CPU time per FLOP a/b | wall time a/b |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for key, v in r.items():
            a, b = key.split("/")
            per = (
                "= CPU time (equal work)"
                if v["equal_work"]
                else f"**{_fmt_ratio(v['cpu_per_flop'])}**"
            )
            cpu = f"**{_fmt_ratio(v['cpu'])}**" if v["equal_work"] else _fmt_ratio(v["cpu"])
            lines.append(
                f"| {_LABELS[a]} / {_LABELS[b]} | {v['compares']} "
                f"| {v['work']['median']:.2f} | {cpu} | {per} "
                f"| {_fmt_ratio(v['wall'])} |"
            )
        lines += [
            "",
            f"Goal: supernet weight step ≤ {res['goal_ratio']:.2f}× the frozen sub-network's "
            f"(CPU time; the same modules, so this measures dispatch overhead only): "
            f"{main['median']:.3f}× — {met}. Derived child: {c['child']['depth']} blocks, "
            f"{c['child']['mult_adds_M']} M mult-adds. " + shared_note(c["load"]),
            "",
        ]
    for n in res.get("not_run", []):
        lines += _previous_md(n)
    if res.get("notes"):
        lines += [res["notes"], ""]
    return "\n".join(lines)

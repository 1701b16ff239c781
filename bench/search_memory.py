"""Peak resident memory of the search steps, one fresh process per (configuration, step kind).

Each child process imports torch and ``densenas_core``, records ``ru_maxrss`` (the baseline),
builds the search state of ``densenas_core.search`` (supernet, optimizers, cost table) and
records the peak again, then runs two steps of one kind — weight steps (one sampled op per row)
or arch steps (two per row, chained cost, masked AdamW) — and records the peak after each. The
second step includes the optimizer state the first one created. Figures are peaks above the
baseline, so the interpreter and libraries are not counted. ``ru_maxrss`` is a high-water mark
of the process's RSS (KiB on Linux); the allocator in use changes it (jemalloc returns memory
differently from glibc), so it is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from .timing import load_snapshot, shared_note

TITLE = "Search step peak memory (CPU, RSS)"
FULL = {"configs": [("mbv2-small", 32, 32, 10), ("mbv2-imagenet", 224, 32, 100)]}
QUICK = {"configs": [("mbv2-small", 32, 8, 10), ("mbv2-imagenet", 96, 8, 100)]}
KINDS = ("weight", "arch")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
CHILD_TIMEOUT_S = 1800


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(space: str, input_size: int, batch: int, num_classes: int, kind: str) -> dict:
    import torch

    import densenas_core.search  # noqa: F401  (imports counted in the baseline)
    from densenas_core.search import SearchConfig, SearchSession

    torch.set_num_threads(THREADS)
    x = torch.randn(batch, 3, input_size, input_size)
    y = torch.randint(0, num_classes, (batch,))
    # initialise torch's CPU runtime (kernels, thread pool, autograd) before the baseline; the
    # first torch.optim optimizer alone adds ~150 MiB (one-time library initialisation)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    torch.nn.functional.conv2d(torch.randn(1, 3, 8, 8), w).sum().backward()
    torch.optim.SGD([w], lr=0.1).step()
    base = _maxrss_mib()
    cfg = SearchConfig(space=space, dataset={"name": "synthetic"}, batch_size=batch)
    run = SearchSession(
        cfg,
        {"num_classes": num_classes, "input_size": input_size, "in_channels": 3},
        torch.device("cpu"),
        None,
    )
    built = _maxrss_mib()
    params = sum(p.numel() for p in run.net.weight_parameters())
    steps, times = [], []
    for s in range(2):
        gen = torch.Generator().manual_seed(s)
        t0 = time.perf_counter()
        if kind == "weight":
            run.weight_step(x, y, gen, 0.05, False, None)
        else:
            run.arch_step(x, y, gen, None)
        times.append(round(time.perf_counter() - t0, 2))
        steps.append(_maxrss_mib())
    return {
        "baseline_mib": round(base, 1),
        "after_build_mib": round(built, 1),
        "after_steps_mib": [round(v, 1) for v in steps],
        "build_delta_mib": round(built - base, 1),
        "peak_delta_mib": round(max(steps) - base, 1),
        "step_delta_over_build_mib": round(max(steps) - built, 1),
        "weight_params": params,
        "weight_params_mib": round(params * 4 / 2**20, 1),
        "step_seconds": times,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if getattr(args, "quick", False) else FULL
    rows, loads = [], [load_snapshot()]
    for space, size, batch, nc in plan["configs"]:
        for kind in KINDS:
            cmd = [
                sys.executable,
                "-m",
                "bench.search_memory",
                "--child",
                space,
                str(size),
                str(batch),
                str(nc),
                kind,
            ]
            print(f"   [search_memory] {space}@{size} b{batch} {kind} ...", flush=True)
            t0 = time.perf_counter()
            p = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            )
            if p.returncode != 0:
                raise RuntimeError(
                    f"child {space} {kind} failed ({p.returncode}): {p.stderr[-2000:]}"
                )
            out = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "space": space,
                    "input_size": size,
                    "batch": batch,
                    "num_classes": nc,
                    "kind": kind,
                    "wall_s": round(time.perf_counter() - t0, 1),
                    **out,
                }
            )
            loads.append(load_snapshot())
            print(
                f"   [search_memory]   peak +{out['peak_delta_mib']} MiB over baseline "
                f"{out['baseline_mib']} MiB",
                flush=True,
            )
    return {
        "title": TITLE,
        "threads": THREADS,
        "allocator": "jemalloc" if "jemalloc" in os.environ.get("LD_PRELOAD", "") else "glibc",
        "rows": rows,
        "load": loads,
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "One fresh process per row (`python -m bench.search_memory --child …`): baseline = "
        "`ru_maxrss` after importing torch and `densenas_core`, creating the input batch, one "
        "tiny conv forward/backward and a dummy optimizer step (so the runtime's one-time "
        "start-up — ~150 MiB for the first `torch.optim` optimizer alone — is in the "
        "baseline); "
        "then the search state is built (`densenas_core.search.SearchSession`: supernet with every "
        "candidate op, SGD, masked AdamW, FLOPs cost table) and two steps of one kind run. "
        f"Allocator: {res['allocator']}; {res['threads']} intra-op thread(s).",
        "",
        "| space | px | batch | step | baseline MiB | build +MiB (weights MiB) | peak +MiB over "
        "baseline | step +MiB over build | step s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['space']} | {r['input_size']} | {r['batch']} | {r['kind']} | "
            f"{r['baseline_mib']:.0f} | {r['build_delta_mib']:.0f} "
            f"({r['weight_params_mib']:.0f}) | **{r['peak_delta_mib']:.0f}** | "
            f"{r['step_delta_over_build_mib']:.0f} | "
            f"{', '.join(str(t) for t in r['step_seconds'])} |"
        )
    note = shared_note(res.get("load", []))
    if note:
        lines += ["", note + " (Memory figures are not affected; step seconds are.)"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        _, _, sp, sz, bs, nc, kd = sys.argv
        print(json.dumps(_child(sp, int(sz), int(bs), int(nc), kd)))
    else:
        sys.exit(
            "usage: python -m bench.search_memory --child SPACE SIZE BATCH CLASSES KIND "
            "(the benchmark itself runs via `python -m bench search_memory`)"
        )

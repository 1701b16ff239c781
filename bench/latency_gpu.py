"""Build the MBV2 ImageNet latency table on a GPU and check it against DenseNAS-C end to end.

    python bench/latency_gpu.py --out DIR                 # CUDA: full table at batch 32 and 1
    python bench/latency_gpu.py --out DIR --cpu-quick     # CPU: reduced run, for testing here

Full mode (needs CUDA): for each batch (default 32, then 1) time every candidate op of
``mbv2-imagenet`` at 224² with CUDA events (docs/algorithm.md §Latency tables), write
``table_b{N}.json``, then measure DenseNAS-C end to end and compare it with the table's
prediction (sum of isolated op medians).
Quick mode (CPU): the ``mbv2-small`` table at batch 1 with few repeats, plus the DenseNAS-C ops
only of ``mbv2-imagenet`` (so the prediction can be compared with a real forward pass).
Everything printed is also written to ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from densenas_core.arch import build_network, get_arch, op_sites
from densenas_core.latency import (
    LatencyTable,
    OpSig,
    measure_network_latency,
    predict_latency,
    profile_space,
)


def _spread(table: LatencyTable) -> dict[str, Any]:
    """How noisy the entries are: relative p10–p90 width, over the timed entries."""
    rel = [
        (s.p90_ms - s.p10_ms) / s.median_ms
        for s in table.entries.values()
        if s.n and s.median_ms > 0
    ]
    if not rel:
        return {"entries_timed": 0}
    rel.sort()
    return {
        "entries_timed": len(rel),
        "rel_p10_p90_width_median": statistics.median(rel),
        "rel_p10_p90_width_p90": rel[int(0.9 * (len(rel) - 1))],
        "rel_p10_p90_width_max": rel[-1],
        "total_median_ms": sum(s.median_ms for s in table.entries.values()),
    }


def _profile(
    space: str,
    *,
    device: str,
    batch: int,
    warmup: int,
    repeats: int,
    out: Path,
    tag: str,
    ops_filter: Any = None,
    num_threads: int | None = None,
) -> tuple[LatencyTable, dict[str, Any]]:
    t0 = time.perf_counter()
    last = [t0]

    def progress(i: int, n: int, sig: OpSig) -> None:
        if time.perf_counter() - last[0] > 10 or i == n:
            last[0] = time.perf_counter()
            print(f"  [{tag}] {i}/{n} ops ({last[0] - t0:.1f}s)", flush=True)

    table = profile_space(
        space,
        device=device,
        batch=batch,
        warmup=warmup,
        repeats=repeats,
        ops_filter=ops_filter,
        progress=progress,
        num_threads=num_threads,
    )
    wall = time.perf_counter() - t0
    path = out / f"table_{tag}.json"
    path.write_text(json.dumps(table.to_dict(), indent=1))
    info = {
        "space": space,
        "batch": batch,
        "entries": len(table),
        "device": table.device_name,
        "method": table.method,
        "build_seconds": round(wall, 3),
        "timing_seconds": round(table.build_seconds or 0.0, 3),
        "file": path.name,
        **_spread(table),
    }
    print(
        f"table {tag}: {info['entries']} entries in {wall:.1f}s on {table.device_name} "
        f"({table.method})",
        flush=True,
    )
    return table, info


def _end_to_end(
    table: LatencyTable,
    *,
    device: str,
    batch: int,
    warmup: int,
    repeats: int,
    num_threads: int | None = None,
) -> dict[str, Any]:
    arch = get_arch("densenas-c")
    model = build_network(arch)
    measured = measure_network_latency(
        model,
        (batch, 3, 224, 224),
        device=device,
        warmup=warmup,
        repeats=repeats,
        num_threads=num_threads,
    )
    predicted = predict_latency(arch, table)
    res = {
        "arch": "densenas-c",
        "batch": batch,
        "predicted_ms": predicted,
        "measured_median_ms": measured["median_ms"],
        "measured_p10_ms": measured["p10_ms"],
        "measured_p90_ms": measured["p90_ms"],
        "measured_std_ms": measured["std_ms"],
        "predicted_over_measured": predicted / measured["median_ms"],
    }
    print(
        f"DenseNAS-C b{batch}: measured {measured['median_ms']:.3f} ms "
        f"(p10 {measured['p10_ms']:.3f}, p90 {measured['p90_ms']:.3f}), "
        f"predicted {predicted:.3f} ms, ratio {res['predicted_over_measured']:.2f}",
        flush=True,
    )
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cpu-quick", action="store_true", help="reduced CPU run (no GPU needed)")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 1])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (--cpu-quick)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"torch": torch.__version__, "tables": [], "end_to_end": []}
    t_start = time.perf_counter()
    if args.cpu_quick:
        device, warmup, repeats, th = "cpu", 1, 3, args.threads
        summary["mode"] = "cpu-quick"
        _, info = _profile(
            "mbv2-small",
            device=device,
            batch=1,
            warmup=warmup,
            repeats=repeats,
            out=args.out,
            tag="mbv2-small_b1",
            num_threads=th,
        )
        summary["tables"].append(info)
        c_ops = {
            OpSig(s.op, s.c_in, s.c_out, s.stride, s.h, s.w)
            for s in op_sites(get_arch("densenas-c"))
        }
        table, info = _profile(
            "mbv2-imagenet",
            device=device,
            batch=1,
            warmup=warmup,
            repeats=repeats,
            out=args.out,
            tag="densenas-c-ops_b1",
            ops_filter=lambda s: s in c_ops,
            num_threads=th,
        )
        summary["tables"].append(info)
        summary["end_to_end"].append(
            _end_to_end(
                table, device=device, batch=1, warmup=warmup, repeats=repeats, num_threads=th
            )
        )
    else:
        if not torch.cuda.is_available():
            print(
                "no CUDA device: run with --cpu-quick for the reduced CPU version", file=sys.stderr
            )
            raise SystemExit(2)
        summary["mode"] = "cuda"
        summary["cuda"] = torch.version.cuda
        summary["device"] = torch.cuda.get_device_name()
        for batch in args.batches:
            table, info = _profile(
                "mbv2-imagenet",
                device="cuda",
                batch=batch,
                warmup=args.warmup,
                repeats=args.repeats,
                out=args.out,
                tag=f"mbv2-imagenet_b{batch}",
            )
            summary["tables"].append(info)
            summary["end_to_end"].append(
                _end_to_end(
                    table, device="cuda", batch=batch, warmup=args.warmup, repeats=args.repeats
                )
            )
    summary["total_seconds"] = round(time.perf_counter() - t_start, 3)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()

"""Run the benchmark suite: ``python -m bench [NAME ...] [--quick]``.

Each benchmark writes ``bench/results/<name>.json``; afterwards ``BENCHMARKS.md`` is rebuilt
from every result file present, so partial reruns keep the other sections.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from .common import machine_info, write_result
from .report import write_markdown

SUITE = [
    "core_step",
    "latency_table",
    "cost_correlation",
    "search_memory",
    "service_load",
    "search_quality",
    "fault_drills",
    "scale",
    "sweep_overhead",
]


def machine_facts(result: dict) -> dict:
    """The machine facts, with what the benchmark measured itself laid over them (e.g. the
    thread count its timed steps ran on: read here, the count is the restored one)."""
    return {**machine_info(), **result.get("machine", {})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("names", nargs="*", default=SUITE, help=f"subset of {SUITE}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument(
        "--config",
        action="append",
        metavar="CONFIG",
        help="core_step only: run just these configurations (a space such as "
        "mbv2-small, SPACE@PX, or a full label); repeatable",
    )
    args = ap.parse_args(argv)
    failed = []
    for name in args.names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            result = mod.run(args)
        except Exception:  # noqa: BLE001 - a failed benchmark is reported, the others still run
            traceback.print_exc()
            failed.append(name)
            continue
        result["machine"] = machine_facts(result)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        result["command"] = (
            "python -m bench "
            + name
            + (" --quick" if args.quick else "")
            + "".join(f" --config {c}" for c in (args.config or []) if name == "core_step")
        )
        print(f"   wrote {write_result(name, result)}", flush=True)
        summary = getattr(mod, "write_summary", None)  # a Markdown file of its own, if any
        if summary is not None:
            print(f"   wrote {summary(result)}", flush=True)
    write_markdown()
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Interleaved timing: several variants measured round by round, so drift hits all of them.

On a shared 2-core machine absolute times drift by tens of percent over minutes; a ratio of two
medians taken minutes apart is meaningless. :func:`interleave` runs variant A, B, C, … once per
round (the order rotated every round, so no variant always follows the same neighbour), keeps
per-round samples, and :func:`paired_ratio` divides them round by round.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    xs = list(samples_ms)
    return {
        "median_ms": statistics.median(xs),
        "p10_ms": quantile(xs, 0.1),
        "p90_ms": quantile(xs, 0.9),
        "min_ms": min(xs),
        "max_ms": max(xs),
        "n": len(xs),
        "samples_ms": [round(x, 3) for x in xs],
    }


def interleave(
    variants: Mapping[str, Callable[[int], Any]],
    *,
    warmup: int,
    repeats: int,
    setup: Callable[[int], Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Per-variant times (ms) of ``repeats`` timed rounds after ``warmup`` untimed ones.

    Returns ``{name: {"wall": [...], "cpu": [...]}}``: wall clock (``perf_counter``) and CPU
    time of the whole process (``process_time``). With one intra-op thread the CPU time is the
    work the step did; wall time also counts the time other processes held the cores.
    ``setup(round)`` runs untimed before each round (e.g. draws the round's sub-network);
    ``variants[name](round)`` is timed. Round ``r`` runs the variants rotated by ``r``.
    """
    names = list(variants)
    out: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    for r in range(warmup + repeats):
        if setup is not None:
            setup(r)
        k = r % len(names)
        order = names[k:] + names[:k]
        line = []
        for n in order:
            c0 = time.process_time()
            t0 = time.perf_counter()
            variants[n](r)
            dt = (time.perf_counter() - t0) * 1e3
            dc = (time.process_time() - c0) * 1e3
            if r >= warmup:
                out[n]["wall"].append(dt)
                out[n]["cpu"].append(dc)
            line.append(f"{n} {dt:.0f}/{dc:.0f}")
        if progress is not None:
            progress(
                f"round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}: "
                + ", ".join(line)
                + " ms wall/cpu"
            )
    return out


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Round-by-round a/b: median, p10, p90, plus the ratio of the medians."""
    rs = [x / y for x, y in zip(a, b)]
    return {
        "median": statistics.median(rs),
        "p10": quantile(rs, 0.1),
        "p90": quantile(rs, 0.9),
        "ratio_of_medians": statistics.median(a) / statistics.median(b),
        "n": len(rs),
    }


def load_snapshot() -> dict[str, Any]:
    """1-minute load average and cores: how shared the machine was while measuring."""
    try:
        la = os.getloadavg()
    except OSError:
        la = (float("nan"),) * 3
    return {"loadavg_1m": round(la[0], 2), "loadavg_5m": round(la[1], 2), "cores": os.cpu_count()}


def shared_note(loads: Sequence[Mapping[str, Any]]) -> str:
    """A sentence saying whether the machine was shared while the figures were taken."""
    vals = [x["loadavg_1m"] for x in loads if x.get("loadavg_1m") == x.get("loadavg_1m")]
    if not vals:
        return ""
    cores = loads[0].get("cores") or 1
    hi = max(vals)
    if hi > 1.2 * cores:
        return (
            f"**The machine was shared while measuring** (1-min load average "
            f"{min(vals):.1f}–{hi:.1f} on {cores} cores): absolute times are inflated and "
            f"noisy; compare the side-by-side ratios, not the absolute figures."
        )
    return f"Load average during the run: {min(vals):.1f}–{hi:.1f} on {cores} cores."

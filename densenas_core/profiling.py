"""Timing: how one module's forward pass is timed alone (:func:`time_module`) and its per-run
times summarised (:class:`LatencyStat`: median, p10, p90, standard deviation), on which device
(:func:`_device_info`) and with how many CPU threads (:func:`cpu_threads`); and the end-to-end
latency of a whole network (:func:`measure_network_latency`).

:mod:`densenas_core.latency` builds its tables from these (``profile_space``) and re-exports
them. CPU runs are timed with ``time.perf_counter``, CUDA runs with ``torch.cuda.Event`` pairs
and a synchronize (docs/algorithm.md §Latency tables).
"""

from __future__ import annotations

import math
import platform
import re
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .specs import ProfileSpec

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def dtype_name(dtype: torch.dtype | str) -> str:
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
        return dtype
    for name, d in _DTYPES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype: unsupported {dtype!r}")


@dataclass(frozen=True)
class LatencyStat:
    median_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    n: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStat:
        xs = sorted(samples_ms)
        if not xs:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        return cls(
            statistics.median(xs),
            _quantile(xs, 0.1),
            _quantile(xs, 0.9),
            statistics.pstdev(xs),
            len(xs),
        )


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted samples."""
    if len(sorted_xs) == 1:
        return sorted_xs[0]
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


# -- timing ----------------------------------------------------------------------------------


def _device_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        driver = None
        try:
            with open("/proc/driver/nvidia/version") as f:
                m = re.search(r"Kernel Module\s+([0-9.]+)", f.read())
                driver = m.group(1) if m else None
        except OSError:
            pass
        return {
            "device_name": torch.cuda.get_device_name(idx),
            "device_kind": "cuda",
            "cuda_version": torch.version.cuda,
            "driver_version": driver,
            "method": "cuda-events",
            "num_threads": None,
        }
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            if m:
                name = m.group(1).strip()
    except OSError:
        pass
    return {
        "device_name": name,
        "device_kind": "cpu",
        "cuda_version": None,
        "driver_version": None,
        "method": "cpu-perf_counter",
        "num_threads": torch.get_num_threads(),
    }


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op CPU threads (restored afterwards); ``None`` leaves it alone.

    Pinning threads matters on shared CPUs: with more OpenMP threads than free cores, a
    descheduled thread stalls every op at its barrier and timings jump by 10–100×.
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError("num_threads: must be ≥ 1")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timing_event() -> torch.cuda.Event:
    # torch.cuda.Event's constructor (__new__) carries no annotations
    return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]


def time_module(
    module: nn.Module,
    x: torch.Tensor,
    *,
    warmup: int = ProfileSpec.warmup,
    repeats: int = ProfileSpec.repeats,
) -> list[float]:
    """Per-run forward times in ms of ``module(x)`` (eval, inference mode, warm-up discarded)."""
    if repeats < 1:
        raise ValueError("repeats: must be ≥ 1")
    module.eval()
    cuda = x.device.type == "cuda"
    out: list[float] = []
    with torch.inference_mode():
        for _ in range(max(0, warmup)):
            module(x)
        if cuda:
            torch.cuda.synchronize(x.device)
            starts = [_timing_event() for _ in range(repeats)]
            ends = [_timing_event() for _ in range(repeats)]
            for s, e in zip(starts, ends):
                s.record()
                module(x)
                e.record()
            torch.cuda.synchronize(x.device)
            out = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                module(x)
                out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_network_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    warmup: int = ProfileSpec.warmup,
    repeats: int = ProfileSpec.repeats,
    dtype: torch.dtype | str = torch.float32,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """End-to-end forward latency of ``model`` at ``input_shape`` (N, C, H, W).

    The model is moved to ``device``/``dtype`` (callers pass a copy if that matters).
    """
    dev = torch.device(device)
    dt = _DTYPES[dtype_name(dtype)]
    if len(input_shape) != 4:
        raise ValueError(f"input_shape: expected (N, C, H, W), got {tuple(input_shape)!r}")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    was_training = model.training
    model = model.to(device=dev, dtype=dt)
    x = torch.randn(*input_shape, device=dev, dtype=dt)
    try:
        with cpu_threads(num_threads if dev.type == "cpu" else None):
            samples = time_module(model, x, warmup=warmup, repeats=repeats)
    finally:
        model.train(was_training)
    stat = LatencyStat.from_samples(samples)
    info = _device_info(dev)
    return {
        **asdict(stat),
        "batch": int(input_shape[0]),
        "input_shape": list(input_shape),
        "dtype": dtype_name(dt),
        "device_name": info["device_name"],
        "device_kind": info["device_kind"],
        "method": info["method"],
    }

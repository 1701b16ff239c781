"""Job bodies and their Ray Train entry points.

Every job attempt has the same shape, written once in :func:`execute`:

1. *setup* (parse the spec, load data, build the model, read a checkpoint) — an error here is
   the job's fault (a bad data path, an unknown space) and would fail again, so all ranks agree
   on it through one collective and rank 0 reports ``failed`` with the message: no retries;
2. *run* — the core loop with an :class:`~workers.reporter.HttpReporter` on rank 0. A
   :class:`~densenas_core.reporting.Stopped` (cancel flag) ends it as ``cancelled``; any other
   exception propagates, so Ray Train restarts the worker group from the last checkpoint
   (``FailureConfig``) and the executor reports the final failure;
3. rank 0 posts ``complete`` and every rank hands the outcome to the executor through
   ``Runtime.finish`` (a ``ray.train.report`` on Ray), which re-posts it if rank 0 could not.

``search_loop`` and ``retrain_loop`` are the ``train_loop_per_worker`` functions given to
``TorchTrainer``; :func:`run_profile` runs in a plain Ray task pinned to the device class.
"""
from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from densenas_core.reporting import Stopped

from .payload import JobPayload
from .reporter import HttpReporter, RankReporter, ReporterError
from .runtime import RayTrainRuntime, Runtime

logger = logging.getLogger(__name__)


class JobSetupError(Exception):
    """The job cannot start (bad spec, data, architecture); retrying would not help."""


def describe(exc: BaseException) -> str:
    """The message a user needs: the innermost cause, named."""
    seen = set()
    while True:
        nxt = exc.__cause__ or None
        failures = getattr(exc, "worker_failures", None)  # ray.train.WorkerGroupError
        if failures:
            nxt = next(iter(failures.values()))
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if nxt is None and isinstance(cause, BaseException):
            nxt = cause
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(exc))
        exc = nxt
    text = str(exc).strip() or repr(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


@dataclass
class Attempt:
    """What a job body gets: the payload, where it runs, and the reporter to use."""

    payload: JobPayload
    runtime: Runtime
    reporter: RankReporter
    http: HttpReporter | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_rank0(self) -> bool:
        return self.runtime.rank == 0

    def flush(self) -> None:
        if self.http is not None:
            self.http.flush(raise_errors=False)


class _StopSources:
    """Rank 0's stop flag: the control plane's cancel flag or a local one (InlineExecutor)."""

    def __init__(self, http: HttpReporter, local: threading.Event | None) -> None:
        self.http, self.local = http, local

    def report(self, event_type: str, **data: Any) -> None:
        self.http.report(event_type, **data)

    def should_stop(self) -> bool:
        return self.http.should_stop() or (self.local is not None and self.local.is_set())


Setup = Callable[[Attempt], Any]
Run = Callable[[Attempt, Any], dict[str, Any]]


def make_reporter(payload: JobPayload, **kw: Any) -> HttpReporter:
    """Rank 0's reporter; intervals from ``DENSENAS_REPORT_FLUSH_S`` (2 s) and
    ``DENSENAS_HEARTBEAT_S`` (10 s), which Ray workers inherit from the cluster's environment."""
    kw.setdefault("flush_interval_s", float(os.environ.get("DENSENAS_REPORT_FLUSH_S", 2.0)))
    kw.setdefault("heartbeat_interval_s", float(os.environ.get("DENSENAS_HEARTBEAT_S", 10.0)))
    return HttpReporter(payload.api_url, payload.job_id, payload.job_token, **kw)


def execute(payload: JobPayload, runtime: Runtime, setup: Setup, run: Run, *,
            stop_event: threading.Event | None = None) -> dict[str, Any]:
    """Run one attempt of a job body on this rank; see the module docstring."""
    runtime.write_marker()
    http = make_reporter(payload) if runtime.rank == 0 else None
    inner = _StopSources(http, stop_event) if http is not None else None
    reporter = RankReporter(inner, rank=runtime.rank, world_size=runtime.world_size,
                            device=runtime.coll_device if runtime.distributed else "cpu")
    attempt = Attempt(payload, runtime, reporter, http)
    outcome, result, error = "failed", None, None
    try:
        prepared, setup_error = None, None
        try:
            prepared = setup(attempt)
        except Exception as exc:  # noqa: BLE001 - reported to the user, see module docstring
            logger.warning("job %s setup failed:\n%s", payload.job_id, traceback.format_exc())
            setup_error = describe(exc)
        if not runtime.all_ok(setup_error is None):
            errors = [e for e in runtime.gather_objects(setup_error) if e]
            error = errors[0] if errors else "setup failed on another rank"
        else:
            try:
                result = run(attempt, prepared)
                outcome = "succeeded"
            except Stopped:
                outcome = "cancelled"
                error = (http.rejected if http is not None else None) or "cancelled on request"
    except BaseException:
        if http is not None:
            http.close()
        raise
    posted = False
    if http is not None:
        try:
            http.complete(outcome, result=result, error=error)
            posted = True
        except ReporterError as exc:
            logger.error("job %s: could not post the outcome (%s); the executor retries",
                         payload.job_id, exc)
        finally:
            http.close()
    final = {"final": True, "outcome": outcome, "posted": posted, "error": error,
             "result": None if posted else result}
    runtime.finish(final)
    return final


# -- search ----------------------------------------------------------------------------------


def _search_setup(a: Attempt) -> dict[str, Any]:
    from densenas_core.data import load_search_data
    from densenas_core.search import SearchConfig

    spec = dict(a.payload.spec)
    config = SearchConfig.from_dict(spec)
    seed = int(spec.get("seed", 0))
    train_data, val_data = load_search_data(spec.get("dataset") or {}, seed)
    cost_table = None
    if a.payload.latency_table:
        from densenas_core.latency import LatencyTable

        cost_table = LatencyTable.from_dict(a.payload.latency_table)
    loaded = a.runtime.load_checkpoint()
    resume_state, resume_meta = loaded if loaded else (None, None)
    return {"config": config, "train": train_data, "val": val_data, "cost_table": cost_table,
            "resume_state": resume_state, "resume_meta": resume_meta}


def _checkpoint_fn(a: Attempt) -> Callable[..., None]:
    def save(state: dict[str, Any], meta: dict[str, Any] | None = None, **kw: Any) -> None:
        meta = dict(meta or {}, **kw)
        for k in ("epoch", "step", "global_step"):
            if k not in meta and k in state and isinstance(state[k], int):
                meta[k] = state[k]
        meta.setdefault("global_step", meta.get("step", 0))
        meta.update(job_id=a.payload.job_id, attempt=a.payload.attempt, kind=a.payload.kind)
        # Events up to this step must be stored before the checkpoint exists: an attempt that
        # resumes from it never re-sends them.
        a.flush()
        a.runtime.save_checkpoint(state, meta)

    return save


def _search_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.search import run_search

    if p["resume_meta"] is not None and a.http is not None:
        meta = p["resume_meta"]
        a.http.set_position(meta.get("epoch"), meta.get("step"))
        a.reporter.report("log", message=f"resumed from the checkpoint at global step "
                                         f"{meta.get('global_step')} (attempt {a.payload.attempt})")
    spec = a.payload.spec
    res = run_search(
        p["config"], p["train"], p["val"], a.reporter,
        device=a.runtime.device,
        grad_sync=a.runtime.grad_sync(),
        checkpoint_fn=_checkpoint_fn(a),
        checkpoint_every=int(spec.get("checkpoint_every", 50) or 0) or None,
        resume_state=p["resume_state"],
        cost_table=p["cost_table"],
        **_shard_kwargs(a),
    )
    workers = a.runtime.gather_objects(a.runtime.worker_info())
    result = {"architecture": res.architecture, "arch_params": res.arch_params,
              "metrics": dict(res.metrics), "measured_latency": None, "workers": workers}
    if a.is_rank0:
        result["measured_latency"] = _measure_latency(res.architecture, spec, a.runtime.device)
    return result


def _shard_kwargs(a: Attempt) -> dict[str, Any]:
    """How this rank takes its slice of every global batch (core's keyword, once it has one)."""
    import inspect

    from densenas_core.search import run_search

    params = inspect.signature(run_search).parameters
    if "shard" in params:
        return {"shard": (a.runtime.rank, a.runtime.world_size)}
    if a.runtime.world_size > 1:
        raise JobSetupError("this densenas_core.search.run_search cannot shard batches "
                            "across workers; use num_workers=1")
    return {}


def _measure_latency(arch_doc: dict[str, Any], spec: dict[str, Any],
                     device: torch.device) -> dict[str, Any] | None:
    """End-to-end latency of the derived network on this worker's device (SPEC §4 setting:
    batch from the spec's latency batch, default 1, at the architecture's input size)."""
    from densenas_core.arch import build_network, get_arch
    from densenas_core.latency import measure_network_latency

    try:
        arch = get_arch(arch_doc)
        model = build_network(arch)
        batch = int((spec.get("cost") or {}).get("batch", 1) or 1)
        shape = (batch, arch.in_channels, arch.input_size, arch.input_size)
        return measure_network_latency(model, shape, device=device,
                                       warmup=int(spec.get("latency_warmup", 5)),
                                       repeats=int(spec.get("latency_repeats", 20)))
    except Exception as exc:  # noqa: BLE001 - a measurement failure must not fail the search
        logger.warning("latency measurement failed: %s", describe(exc))
        return None


# -- retrain ---------------------------------------------------------------------------------


def _retrain_setup(a: Attempt) -> dict[str, Any]:
    from densenas_core.arch import build_network
    from densenas_core.data import load_eval_data
    from densenas_core.retrain import RetrainConfig

    spec = dict(a.payload.spec)
    config = RetrainConfig.from_dict(spec)
    train_data, val_data = load_eval_data(spec.get("dataset") or {})
    torch.manual_seed(int(spec.get("seed", 0)))
    model = build_network(a.payload.architecture, **_data_shape(spec, train_data))
    loaded = a.runtime.load_checkpoint()
    resume_state, resume_meta = loaded if loaded else (None, None)
    return {"config": config, "model": model, "train": train_data, "val": val_data,
            "resume_state": resume_state, "resume_meta": resume_meta}


def _data_shape(spec: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """num_classes / in_channels / input_size of the retrain data, when the dataset tells."""
    out: dict[str, Any] = {}
    for attr in ("num_classes", "in_channels", "input_size"):
        value = getattr(dataset, attr, None)
        if value is None:
            value = (spec.get("dataset") or {}).get(attr)
        if value is not None:
            out[attr] = int(value)
    return out


def _retrain_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.retrain import run_retrain

    model = p["model"]
    if isinstance(a.runtime, RayTrainRuntime):
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)  # DDP when world size > 1
    else:
        model = model.to(a.runtime.device)
    res = run_retrain(p["config"], model, p["train"], p["val"], a.reporter,
                      device=a.runtime.device, checkpoint_fn=_checkpoint_fn(a),
                      resume_state=p["resume_state"],
                      **_retrain_dist_kwargs(a))
    metrics = dict(getattr(res, "metrics", res))
    workers = a.runtime.gather_objects(a.runtime.worker_info())
    return {"metrics": metrics, "workers": workers}


def _retrain_dist_kwargs(a: Attempt) -> dict[str, Any]:
    import inspect

    from densenas_core.retrain import run_retrain

    params = inspect.signature(run_retrain).parameters
    kw: dict[str, Any] = {}
    if "shard" in params:
        kw["shard"] = (a.runtime.rank, a.runtime.world_size)
    if "metric_sync" in params and a.runtime.world_size > 1:
        kw["metric_sync"] = _sum_across_ranks
    return kw


def _sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t)
    return t


# -- profile ---------------------------------------------------------------------------------


def _profile_setup(a: Attempt) -> dict[str, Any]:
    from densenas_core.spaces import get_space

    spec = a.payload.spec
    device_spec = spec.get("device") or {}
    kind = str(device_spec.get("device", "cpu"))
    if kind in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise JobSetupError("device: cuda requested but this worker has no GPU")
        device = torch.device("cuda", torch.cuda.current_device())
    elif kind == "cpu":
        device = torch.device("cpu")
    else:
        raise JobSetupError(f"device.device: expected 'cpu' or 'cuda', got {kind!r}")
    return {"space": get_space(spec.get("space", "mbv2-small")), "device": device}


def _profile_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.latency import profile_space

    spec = a.payload.spec

    def progress(done: int, total: int, sig: Any) -> None:
        if done == total or done % 10 == 0:
            a.reporter.report("step", phase="profile", epoch=0, step=done, total=total,
                              op=str(getattr(sig, "op", sig)))
        if a.reporter.should_stop():
            raise Stopped()

    kwargs: dict[str, Any] = {}
    if spec.get("input_size"):
        kwargs["input_size"] = int(spec["input_size"])
    for key in ("in_channels", "num_classes"):
        if spec.get(key):
            kwargs[key] = int(spec[key])
    table = profile_space(p["space"], device=p["device"], batch=int(spec.get("batch_size", 1)),
                          warmup=int(spec.get("warmup", 10)), repeats=int(spec.get("repeats", 30)),
                          progress=progress, **kwargs)
    return {"latency_table": table.to_dict()}


JOBS: dict[str, tuple[Setup, Run]] = {
    "search": (_search_setup, _search_run),
    "retrain": (_retrain_setup, _retrain_run),
    "profile": (_profile_setup, _profile_run),
}


def run_job(payload: JobPayload, runtime: Runtime | None = None, *,
            stop_event: threading.Event | None = None) -> dict[str, Any]:
    setup, run = JOBS[payload.kind]
    return execute(payload, runtime or Runtime(payload), setup, run, stop_event=stop_event)


# -- Ray entry points ------------------------------------------------------------------------


def search_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of a search job: ``config = {"payload": JobPayload dict}``."""
    payload = JobPayload.from_dict(config["payload"])
    run_job(payload, RayTrainRuntime(payload))


def retrain_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of a retrain job (DDP over all workers of all nodes)."""
    payload = JobPayload.from_dict(config["payload"])
    run_job(payload, RayTrainRuntime(payload))


def run_profile(payload_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of the profile Ray task (one process on the profiled device class)."""
    return run_job(JobPayload.from_dict(payload_dict))


TRAIN_LOOPS = {"search": search_loop, "retrain": retrain_loop}

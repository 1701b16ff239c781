"""Job bodies and their Ray Train entry points.

Every job attempt has the same shape, written once in :func:`execute`:

1. *setup* (parse the spec, load data, build the model, read a checkpoint) — an error here is
   the job's fault (a bad data path, an unknown space) and would fail again, so all ranks agree
   on it through one collective and rank 0 reports ``failed`` with the message: no retries;
2. *run* — the core loop with an :class:`~workers.reporter.HttpReporter` on rank 0. A
   :class:`~densenas_core.reporting.Stopped` (cancel flag) ends it as ``cancelled``; any other
   exception propagates, so Ray Train restarts the worker group from the last checkpoint
   (``FailureConfig``) and the executor reports the final failure;
3. rank 0 posts ``complete`` and returns the attempt's final record (on Ray, rank 0's return
   value reaches the executor as ``Result.return_value``), which re-posts the outcome if rank 0
   could not.

``search_loop`` and ``retrain_loop`` are the ``train_loop_per_worker`` functions given to
``TorchTrainer``; :func:`run_profile` runs in a plain Ray task pinned to the device class.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from densenas_core.reporting import Stopped

from .payload import JobPayload, tail
from .reporter import HttpReporter, RankReporter, ReporterError
from .runtime import RayTrainRuntime, Runtime

logger = logging.getLogger(__name__)


MAX_ERROR_CHARS = 4000


class JobSetupError(Exception):
    """The job cannot start (bad spec, data, architecture); retrying would not help."""


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first: ``__cause__``, a Ray Train worker group's
    first worker failure, a Ray task error's ``cause``."""
    chain, seen = [exc], set()
    while True:
        nxt = exc.__cause__ or None
        failures = getattr(exc, "worker_failures", None)  # ray.train.WorkerGroupError
        if failures:
            nxt = next(iter(failures.values()))
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if nxt is None and isinstance(cause, BaseException):
            nxt = cause
        if nxt is None or id(nxt) in seen:
            return chain
        seen.add(id(exc))
        exc = nxt
        chain.append(exc)


def describe(exc: BaseException) -> str:
    """The message a user needs: the innermost cause, named."""
    exc = _causes(exc)[-1]
    text = str(exc).strip() or repr(exc)
    name = type(exc).__name__
    text = text if text.startswith(name) else f"{name}: {text}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


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


def execute(
    payload: JobPayload,
    runtime: Runtime,
    setup: Setup,
    run: Run,
    *,
    stop_event: threading.Event | None = None,
) -> dict[str, Any]:
    """Run one attempt of a job body on this rank; see the module docstring."""
    runtime.write_marker()
    http = make_reporter(payload) if runtime.rank == 0 else None
    inner = _StopSources(http, stop_event) if http is not None else None
    reporter = RankReporter(
        inner,
        rank=runtime.rank,
        world_size=runtime.world_size,
        device=runtime.coll_device if runtime.distributed else "cpu",
    )
    attempt = Attempt(payload, runtime, reporter, http)
    outcome, result, error, error_tail = "failed", None, None, None
    try:
        prepared, setup_error = None, None
        try:
            prepared = setup(attempt)
        except Exception as exc:  # noqa: BLE001 - reported to the user, see module docstring
            logger.warning("job %s setup failed:\n%s", payload.job_id, traceback.format_exc())
            setup_error, error_tail = describe(exc), failure_tail(exc)
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
            http.complete(outcome, result=result, error=error, traceback_tail=error_tail)
            posted = True
        except ReporterError as exc:
            logger.error(
                "job %s: could not post the outcome (%s); the executor retries", payload.job_id, exc
            )
        finally:
            http.close()
    final = {
        "final": True,
        "outcome": outcome,
        "posted": posted,
        "error": error,
        "traceback_tail": error_tail,
        "result": None if posted else result,
    }
    runtime.finish(final)
    return final


def failure_tail(exc: BaseException) -> str | None:
    """The end of the traceback that explains ``exc``: the failing worker's own traceback when
    Ray carried one back (``RayTaskError.traceback_str``), else this process's."""
    remote = [tb for c in _causes(exc) if isinstance(tb := getattr(c, "traceback_str", None), str)]
    return tail(remote[-1] if remote else "".join(traceback.format_exception(exc)))


# -- search ----------------------------------------------------------------------------------

#: seq range for the worker's own events (resume notes), disjoint from the loops' 4·step + slot
WORKER_SEQ_BASE = 2**40


def _per_rank_batch(batch_size: int, world_size: int) -> int:
    """The spec's batch size is the global batch: a run on N workers sees the same batches as
    on one (rank r takes the r-th stride), so each rank gets batch/N."""
    if batch_size % world_size:
        raise JobSetupError(
            f"batch_size: the global batch {batch_size} must be divisible by "
            f"the number of workers ({world_size})"
        )
    return batch_size // world_size


def _resume(a: Attempt) -> tuple[Any, Any]:
    loaded = a.runtime.load_checkpoint()
    return loaded if loaded else (None, None)


def _search_setup(a: Attempt) -> dict[str, Any]:
    from dataclasses import replace

    from densenas_core.data import load_search_data
    from densenas_core.spaces import get_space
    from densenas_core.specs import DatasetSpec

    config = a.payload.core_spec()
    space = get_space(config.space)
    rank_config = replace(
        config, batch_size=_per_rank_batch(config.batch_size, a.runtime.world_size)
    )
    if config.cost.metric == "latency" and not a.payload.latency_table:
        raise JobSetupError(
            "cost.metric: 'latency' needs a latency table, and the launch payload has none"
        )
    data_spec = DatasetSpec.from_dict(config.dataset, default_input_size=space.input_size)
    train_data, val_data, info = load_search_data(data_spec, config.seed, config.val_fraction)
    cost_table = None
    if a.payload.latency_table:
        from densenas_core.cost import latency_table

        # Resolved here, not in the loop: a table that lacks an op of this space at this
        # resolution is the job's error, not one a restart could fix.
        cost_table = latency_table(
            space,
            a.payload.latency_table,
            info["input_size"],
            info["num_classes"],
            info["in_channels"],
        )
    state, meta = _resume(a)
    return {
        "config": rank_config,
        "train": train_data,
        "val": val_data,
        "info": info,
        "cost_table": cost_table,
        "resume_state": state,
        "resume_meta": meta,
    }


def _checkpoint_fn(a: Attempt) -> Callable[[dict[str, Any]], None]:
    def save(state: dict[str, Any]) -> None:
        meta = {
            k: state[k]
            for k in ("epoch", "step_in_epoch", "global_step")
            if isinstance(state.get(k), int)
        }
        meta.update(job_id=a.payload.job_id, attempt=a.payload.attempt, kind=a.payload.kind)
        history = state.get("history")
        if isinstance(history, list) and history:  # what a sweep's scheduler (ASHA) reads
            meta["epochs_done"] = len(history)
            if isinstance(history[-1].get("val_acc"), (int, float)):
                meta["val_acc"] = float(history[-1]["val_acc"])
        # Events up to this step must be stored before the checkpoint exists: an attempt that
        # resumes from it never re-sends them.
        a.flush()
        a.runtime.save_checkpoint(state, meta)

    return save


def _note_resume(a: Attempt, meta: dict[str, Any] | None) -> None:
    if meta is None:
        return
    step = int(meta.get("global_step", 0))
    a.reporter.report(
        "log",
        message=f"attempt {a.payload.attempt} resumed from the checkpoint at global step {step}",
        seq=WORKER_SEQ_BASE + a.payload.attempt * 2**32 + step,
    )


def _search_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.search import run_search

    from .syncbn import global_batch_norm

    _note_resume(a, p["resume_meta"])
    rt = a.runtime
    # N workers run the 1-worker search: same global batches, averaged gradients, and batch
    # norm over the global batch (see workers.syncbn).
    with global_batch_norm(rt.world_size):
        res = run_search(
            p["config"],
            p["train"],
            p["val"],
            a.reporter,
            device=rt.device,
            grad_sync=rt.grad_sync(),
            checkpoint_fn=_checkpoint_fn(a),
            checkpoint_every=a.payload.resources().checkpoint_every,
            resume_state=p["resume_state"],
            cost_table=p["cost_table"],
            data_info=p["info"],
            rank=rt.rank,
            world_size=rt.world_size,
        )
    workers = rt.gather_objects(rt.worker_info())
    result = {
        "architecture": res.architecture,
        "arch_params": res.arch_params,
        "metrics": {**res.metrics, "world_size": rt.world_size},
        "measured_latency": None,
        "workers": workers,
    }
    if a.is_rank0:
        result["measured_latency"] = _measure_latency(res.architecture, rt.device)
    return result


def _measure_latency(arch_doc: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """End-to-end forward latency of the derived network on this worker's device class, at
    batch 1 and the architecture's input size (as the search saw it)."""
    from densenas_core.arch import build_network, get_arch
    from densenas_core.latency import measure_network_latency

    try:
        arch = get_arch(arch_doc)
        shape = (1, arch.in_channels, arch.input_size, arch.input_size)
        return measure_network_latency(
            build_network(arch), shape, device=device, warmup=5, repeats=20
        )
    except Exception as exc:  # noqa: BLE001 - a measurement failure must not fail the search
        logger.warning("latency measurement failed: %s", describe(exc))
        return None


# -- retrain ---------------------------------------------------------------------------------


def _retrain_setup(a: Attempt) -> dict[str, Any]:
    from dataclasses import replace

    from densenas_core.arch import build_network, get_arch
    from densenas_core.data import dataset_meta, load_eval_data

    config = a.payload.core_spec()
    rank_config = replace(
        config, batch_size=_per_rank_batch(config.batch_size, a.runtime.world_size)
    )
    assert a.payload.architecture is not None  # JobPayload refuses a retrain without one
    arch = get_arch(a.payload.architecture)
    train_data, val_data = load_eval_data(config.dataset, config.seed)
    shape = dataset_meta(train_data)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts)
    model = build_network(
        arch,
        num_classes=shape["num_classes"],
        input_size=shape["input_size"],
        in_channels=shape["in_channels"],
    )
    state, meta = _resume(a)
    return {
        "config": rank_config,
        "model": model,
        "train": train_data,
        "val": val_data,
        "resume_state": state,
        "resume_meta": meta,
    }


def _check_layout(a: Attempt) -> None:
    """Stop before training when the ranks are not ``num_nodes × workers_per_node`` (Ray
    placed them otherwise): every rank sees the same gathered node ids and raises alike."""
    from .placement import PlacementError, node_layout_error

    want = a.payload.resources()
    if want.num_nodes <= 1 or a.runtime.world_size <= 1:
        return
    ranks = [w["node_id"] for w in a.runtime.gather_objects(a.runtime.worker_info())]
    error = node_layout_error(ranks, want.num_nodes, want.workers_per_node)
    if error:
        raise PlacementError(error)


def _retrain_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.retrain import run_retrain

    _note_resume(a, p["resume_meta"])
    rt = a.runtime
    _check_layout(a)
    model = p["model"]
    if isinstance(rt, RayTrainRuntime):
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    else:
        model = model.to(rt.device)
    # Batches come by index from in-memory tensors (no DataLoader): run_retrain gives rank r
    # the r-th stride of each seeded permutation, which is what a DistributedSampler does.
    out = run_retrain(
        p["config"],
        model,
        p["train"],
        p["val"],
        a.reporter,
        device=rt.device,
        checkpoint_fn=_checkpoint_fn(a),
        checkpoint_every=a.payload.resources().checkpoint_every,
        resume_state=p["resume_state"],
        rank=rt.rank,
        world_size=rt.world_size,
    )
    metrics = {k: v for k, v in out.items() if k != "history"}
    workers = rt.gather_objects(rt.worker_info())
    return {"metrics": {**metrics, "world_size": rt.world_size}, "workers": workers}


# -- profile ---------------------------------------------------------------------------------


def _profile_setup(a: Attempt) -> dict[str, Any]:
    from densenas_core.spaces import get_space

    spec = a.payload.core_spec()
    if a.payload.resources().device.device == "cuda":
        if not torch.cuda.is_available():
            raise JobSetupError("device: cuda requested but this worker has no GPU")
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    return {"spec": spec, "space": get_space(spec.space), "device": device}


def _profile_run(a: Attempt, p: dict[str, Any]) -> dict[str, Any]:
    from densenas_core.latency import profile_space

    spec = p["spec"]

    def progress(done: int, total: int, sig: Any) -> None:
        if done == total or done % 10 == 0:
            a.reporter.report(
                "step",
                phase="profile",
                epoch=0,
                step=done,
                total=total,
                op=str(getattr(sig, "op", sig)),
            )
        if a.reporter.should_stop():
            raise Stopped()

    table = profile_space(
        p["space"],
        device=p["device"],
        batch=spec.batch_size,
        input_size=spec.input_size,
        warmup=spec.warmup,
        repeats=spec.repeats,
        progress=progress,
    )
    return {"latency_table": table.to_dict()}


JOBS: dict[str, tuple[Setup, Run]] = {
    "search": (_search_setup, _search_run),
    "retrain": (_retrain_setup, _retrain_run),
    "profile": (_profile_setup, _profile_run),
}


def run_job(
    payload: JobPayload,
    runtime: Runtime | None = None,
    *,
    stop_event: threading.Event | None = None,
) -> dict[str, Any]:
    setup, run = JOBS[payload.kind]
    return execute(payload, runtime or Runtime(payload), setup, run, stop_event=stop_event)


# -- Ray entry points ------------------------------------------------------------------------


def search_loop(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of a search job: ``config = {"payload": JobPayload dict}``.
    Returns the attempt's final record (rank 0's becomes ``Result.return_value``)."""
    payload = JobPayload.from_dict(config["payload"])
    return run_job(payload, RayTrainRuntime(payload))


def retrain_loop(config: dict[str, Any]) -> dict[str, Any]:
    """``train_loop_per_worker`` of a retrain job (DDP over all workers of all nodes)."""
    payload = JobPayload.from_dict(config["payload"])
    return run_job(payload, RayTrainRuntime(payload))


def run_profile(payload_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of the profile Ray task (one process on the profiled device class)."""
    return run_job(JobPayload.from_dict(payload_dict))


TRAIN_LOOPS = {"search": search_loop, "retrain": retrain_loop}

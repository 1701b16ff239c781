"""The Ray side of a job attempt: the detached per-job actor (:class:`JobActor`) and what it
starts (a Ray Train ``TorchTrainer`` from :func:`build_trainer` for search and retrain, a Ray
task with :func:`profile_options` for a profile), and the environment an embedded
single-machine Ray needs. :class:`workers.executors.RayExecutor` creates the actors; ``ray``
is imported only where it is used, so importing this module does not import Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

# Only what the job actor itself needs at import: Ray loads this module in every job actor
# (the actor class is pickled by reference). The job bodies (train_fns, runtime, outcomes)
# import torch — ~470 MB resident in each actor that only waits on its trainer — so they are
# imported where they are used (docs/capacity.md §Per-job memory).
from .payload import JobPayload
from .reporter import HttpReporter

logger = logging.getLogger(__name__)

#: Set in this process only when it starts the embedded single-machine Ray (never when joining
#: a cluster): cluster mode off keeps that Ray on 127.0.0.1. On Linux, ``=0`` also turns
#: multi-node off, so deploy files and ``ray start`` nodes must leave it unset
#: (docs/operations.md §Ray cluster mode switch).
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _ensure_local_ray_env() -> None:
    """Before an in-process Ray starts: its GCS, raylet and workers inherit this environment,
    and this process's own Ray constants are read when ``ray`` is first imported."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


def _warn_if_cluster_mode_imported() -> None:
    """Ray reads the switch once, when imported: a process that imported it earlier with
    cluster mode on starts its embedded Ray on the eth0 address instead of loopback."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without that module
        return
    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
        logger.warning(
            "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set: "
            "the embedded Ray may bind the host's network address, not loopback"
        )


def _failure_config() -> Any:
    """One retry budget per job: the service's attempts (``max_attempts``, each resuming from
    the job's last checkpoint). Ray Train restarts nothing itself — no worker-group restarts,
    no controller retries of a start that timed out, no preemption retries — so a failure
    always ends the attempt, and the control plane records why before it retries."""
    from ray.train.v2.api.config import FailureConfig  # see build_trainer

    return FailureConfig(max_failures=0, controller_failure_limit=0, max_preemption_failures=0)


def _retrain_placement(
    nodes: int, per_node: int, resources: dict[str, float]
) -> tuple[str, list[dict[str, str]] | None]:
    """(strategy, per-worker label selectors) that put exactly ``per_node`` workers on each of
    ``nodes`` nodes: STRICT_SPREAD for one per node; else bundles pinned to chosen nodes."""
    if nodes <= 1:
        return "PACK", None
    if per_node == 1:
        return "STRICT_SPREAD", None
    import ray

    from .placement import bundle_selectors, plan_nodes

    try:
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()
    except Exception:  # noqa: BLE001 - private API: rank by totals only
        free = None
    chosen = plan_nodes(ray.nodes(), nodes, per_node, resources, free)
    return "PACK", bundle_selectors(chosen, per_node)


def build_trainer(
    payload: JobPayload, *, cpus_per_worker: float = 1.0, callbacks: Sequence[Any] = ()
) -> Any:
    """The trainer for a search or retrain payload (its run name is the job): a
    ``TorchTrainer`` in all but its import — a ``DataParallelTrainer`` with the torch backend
    of :mod:`workers.torch_backend`, so the job actor that builds it never imports torch;
    ``callbacks``: more Ray Train callbacks (a sweep's trial adds Tune's report bridge)."""
    # Ray Train V2's classes, which ray.train exports with V2 on (Ray's default, and what this
    # module needs): imported from where they are defined, because a type checker reads those
    # packages' V1 names instead.
    from ray.train.v2.api.config import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from .placement import NamePlacementGroups
    from .storage import CHECKPOINTS_TO_KEEP
    from .torch_backend import TRAIN_KINDS, TorchBackendConfig, train_loop

    if payload.kind not in TRAIN_KINDS:
        raise ValueError(f"no trainer for a {payload.kind} job")
    want = payload.resources()
    resources: dict[str, float] = {"CPU": float(cpus_per_worker)}
    use_gpu = want.gpus_per_worker > 0
    if use_gpu:
        resources["GPU"] = want.gpus_per_worker
    strategy, selectors = "PACK", None
    if payload.kind == "retrain":
        strategy, selectors = _retrain_placement(want.num_nodes, want.workers_per_node, resources)
    scaling = ScalingConfig(
        num_workers=want.num_workers,
        use_gpu=use_gpu,
        resources_per_worker=resources,
        placement_strategy=strategy,
        label_selector=selectors,
    )
    run = RunConfig(
        name=payload.run_name,
        storage_path=payload.storage_path,
        failure_config=_failure_config(),
        checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
        callbacks=[NamePlacementGroups(payload.job_id, payload.attempt), *callbacks],
    )
    return DataParallelTrainer(
        train_loop,
        train_loop_config={"payload": payload.to_dict()},
        backend_config=TorchBackendConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=run,  # type: ignore[arg-type]  # annotated with V1's class; V2 wants V2's
    )


def profile_options(payload: JobPayload) -> dict[str, Any]:
    """Ray task options that land the profile on the device class it measures."""
    device = payload.resources().device
    opts: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}  # one budget: the service's
    if device.device == "cuda" or device.gpu_type:
        opts["num_gpus"] = 1
        if device.gpu_type:
            opts["accelerator_type"] = device.gpu_type
    return opts


class JobActor:
    """Body of the detached per-job actor; starts the job as soon as it exists."""

    def __init__(self, payload: dict[str, Any], cpus_per_worker: float = 1.0) -> None:
        self.payload = JobPayload.from_dict(payload)
        self.cpus_per_worker = cpus_per_worker
        self.state = "running"
        self.error: str | None = None
        self.started_at = time.time()
        self._done = threading.Event()
        self._cancelling = threading.Event()
        # Heartbeats from the first second (a trainer can take minutes to start on a busy
        # cluster) and a second path for the cancel flag: if the loop does not stop on it
        # within the grace period (stuck start-up, hung collective), the actor ends the job.
        self._beat = HttpReporter(
            self.payload.api_url,
            self.payload.job_id,
            self.payload.job_token,
            flush_interval_s=0,
            heartbeat_interval_s=float(os.environ.get("DENSENAS_HEARTBEAT_S", 10.0)),
        )
        threading.Thread(target=self._watch_cancel, daemon=True, name="densenas-watch").start()
        self._thread = threading.Thread(target=self._main, daemon=True, name="densenas-job")
        self._thread.start()

    def _watch_cancel(self) -> None:
        grace = float(os.environ.get("DENSENAS_CANCEL_GRACE_S", 60.0))
        while not self._done.wait(0.5):
            if self._beat.cancel_requested:
                self.cancel(grace)
                return

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # last resort: say something
            from .outcomes import post_failure

            logger.exception("job actor %s crashed", self.payload.job_id)
            post_failure(self.payload, exc)
        finally:
            self._done.set()
            self._beat.close()
            self._exit()

    def _run(self) -> None:
        import ray

        p = self.payload
        try:
            if p.kind == "profile":
                from .train_fns import run_profile  # the task's function (pickled here)

                task = ray.remote(run_profile).options(**profile_options(p))
                final = ray.get(task.remote(p.to_dict()))
            elif p.kind == "sweep":
                from .sweep import run_sweep, tune_trials

                final = run_sweep(p, tune_trials(p, cpus_per_worker=self.cpus_per_worker))
            else:
                trainer = build_trainer(p, cpus_per_worker=self.cpus_per_worker)
                final = trainer.fit().return_value
        except Exception as exc:  # noqa: BLE001 - the trainer's final error, after its retries
            from .outcomes import post_failure
            from .train_fns import describe

            self.state, self.error = "failed", describe(exc)
            logger.error("job %s failed: %s", p.job_id, self.error)
            post_failure(p, exc)
            return
        from .outcomes import finish_from

        self.state = (final or {}).get("outcome", "failed")
        finish_from(p, final)

    def _release(self) -> None:
        """Remove this attempt's placement groups: after a clean finish Ray Train did already;
        after a controller that died, or a cancel that ends a trainer still waiting for
        resources, nobody else would until the dispatcher's sweep."""
        from .placement import remove_job_groups

        try:
            removed = remove_job_groups(self.payload.job_id, self.payload.attempt)
        except Exception as exc:  # noqa: BLE001 - the dispatcher's sweep is the fallback
            logger.warning("job %s: placement groups not released: %s", self.payload.job_id, exc)
            return
        if removed:
            logger.warning(
                "job %s attempt %s: removed %d placement group(s) left behind",
                self.payload.job_id,
                self.payload.attempt,
                removed,
            )

    def _exit(self) -> None:
        import ray

        self._release()
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception:  # noqa: BLE001
            os._exit(0)

    # -- remote API ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "job_id": self.payload.job_id,
            "kind": self.payload.kind,
            "attempt": self.payload.attempt,
            "state": self.state,
            "error": self.error,
            "started_at": self.started_at,
        }

    def cancel(self, grace_s: float) -> None:
        """Fallback behind the cooperative cancel flag: if the job has not ended after
        ``grace_s``, report ``cancelled`` and exit (which tears down the trainer and its
        workers, all owned by this actor)."""

        if self._cancelling.is_set():
            return
        self._cancelling.set()

        def later() -> None:
            if self._done.wait(grace_s):
                return
            from .outcomes import post_outcome

            self.state = "cancelled"
            post_outcome(
                self.payload,
                "cancelled",
                error=f"cancelled: the job did not stop within {grace_s:g}s; killed",
            )
            self._exit()

        threading.Thread(target=later, daemon=True, name="densenas-cancel").start()


def _in_owner_thread(start: Callable[[], Any]) -> None:
    """Run ``start`` (the embedded Ray's ``ray.init``) in a thread that lives as long as the
    process. Ray starts its GCS, raylet and helpers with ``PR_SET_PDEATHSIG = SIGKILL``, which
    fires when the *thread* that forked them ends: started from a short-lived thread (an API
    request's worker thread, which AnyIO ends after 10 s idle) the whole local Ray was killed
    under the running service, which then exited ("Failed to connect to GCS within 60 s")."""
    done = threading.Event()
    failure: list[BaseException] = []

    def owner() -> None:
        try:
            start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)
        finally:
            done.set()
        if not failure:
            threading.Event().wait()  # never set: Ray's processes are this thread's children

    threading.Thread(target=owner, name="densenas-ray-owner", daemon=True).start()
    done.wait()
    if failure:
        raise failure[0]

"""Executors: how the dispatcher starts a job attempt, asks whether it still runs, and stops it.

Interface (docs/DESIGN.md): ``start(payload)``, ``alive(job_id) -> bool``, ``cancel(job_id)``,
``shutdown()``. Results never flow back through the executor: the job itself reports over HTTP
(events, heartbeat, complete) with its job token, so a control plane that restarts loses
nothing and only needs ``alive`` to reconcile.

* :class:`InlineExecutor` runs the job body in a thread of this process (tests, a laptop, a
  fallback without Ray). No retries from checkpoints within an attempt.
* :class:`RayExecutor` starts one detached named actor per job (``densenas-job-<id>`` in
  namespace ``densenas``) that drives a Ray Train ``TorchTrainer`` (search, retrain) or a Ray
  task pinned to the profiled device class (profile). The actor outlives the control plane,
  reports a failure the trainer could not report itself, and removes itself when done.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .payload import JobPayload, job_actor_name, parse_actor_name
from .reporter import HttpReporter, ReporterError
from .train_fns import TRAIN_LOOPS, describe, failure_tail, run_job, run_profile

logger = logging.getLogger(__name__)

CHECKPOINTS_TO_KEEP = 2


class Executor(Protocol):
    def start(self, payload: JobPayload) -> None: ...

    def alive(self, job_id: int) -> bool: ...

    def cancel(self, job_id: int) -> None: ...

    def shutdown(self) -> None: ...


def post_outcome(
    payload: JobPayload,
    outcome: str,
    *,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    traceback_tail: str | None = None,
    max_attempts: int = 8,
) -> bool:
    """Report an outcome the job body could not report itself. False when the control plane
    refused it (typically 409: the attempt was already completed) or stayed unreachable."""
    reporter = HttpReporter(
        payload.api_url,
        payload.job_id,
        payload.job_token,
        flush_interval_s=0,
        heartbeat_interval_s=0,
        max_attempts=max_attempts,
    )
    try:
        reporter.complete(outcome, result=result, error=error, traceback_tail=traceback_tail)
        return True
    except ReporterError as exc:
        logger.warning("job %s: outcome %s not accepted: %s", payload.job_id, outcome, exc)
        return False
    finally:
        reporter.close()


def post_failure(payload: JobPayload, exc: BaseException) -> bool:
    """Report ``exc`` as the attempt's failure: its message and the end of its traceback."""
    return post_outcome(payload, "failed", error=describe(exc), traceback_tail=failure_tail(exc))


def _finish_from(payload: JobPayload, final: Mapping[str, Any] | None) -> None:
    """Post what the job body left unposted (its final report says whether it posted)."""
    if not final or not final.get("final"):
        post_outcome(payload, "failed", error="the trainer finished without reporting an outcome")
    elif not final.get("posted"):
        post_outcome(
            payload,
            final["outcome"],
            result=final.get("result"),
            error=final.get("error"),
            traceback_tail=final.get("traceback_tail"),
        )


# -- inline ----------------------------------------------------------------------------------


class InlineExecutor:
    """Runs each job in a thread of this process, with the same job bodies as on Ray."""

    def __init__(self) -> None:
        self._jobs: dict[int, tuple[threading.Thread, threading.Event]] = {}
        self._lock = threading.Lock()

    def start(self, payload: JobPayload) -> None:
        with self._lock:
            if self.alive(payload.job_id):
                logger.info("job %s already running here", payload.job_id)
                return
            stop = threading.Event()
            thread = threading.Thread(
                target=self._run,
                args=(payload, stop),
                daemon=True,
                name=job_actor_name(payload.job_id),
            )
            self._jobs[payload.job_id] = (thread, stop)
            thread.start()

    @staticmethod
    def _run(payload: JobPayload, stop: threading.Event) -> None:
        try:
            final = run_job(payload, stop_event=stop)
        except BaseException as exc:  # a thread has nobody else to tell
            logger.exception("job %s failed", payload.job_id)
            post_failure(payload, exc)
            return
        _finish_from(payload, final)

    def alive(self, job_id: int) -> bool:
        entry = self._jobs.get(int(job_id))
        return entry is not None and entry[0].is_alive()

    def cancel(self, job_id: int) -> None:
        """Raise the local stop flag; the loop stops after its current step."""
        entry = self._jobs.get(int(job_id))
        if entry is not None:
            entry[1].set()

    def wait(self, job_id: int, timeout: float | None = None) -> bool:
        entry = self._jobs.get(int(job_id))
        if entry is None:
            return True
        entry[0].join(timeout)
        return not entry[0].is_alive()

    def shutdown(self, timeout: float = 30.0) -> None:
        for job_id in list(self._jobs):
            self.cancel(job_id)
        deadline = time.monotonic() + timeout
        for thread, _ in list(self._jobs.values()):
            thread.join(max(0.0, deadline - time.monotonic()))


# -- Ray -------------------------------------------------------------------------------------

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


def build_trainer(payload: JobPayload, *, cpus_per_worker: float = 1.0) -> Any:
    """The ``TorchTrainer`` for a search or retrain payload (its run name is the job)."""
    # Ray Train V2's classes, which ray.train and ray.train.torch export with V2 on (Ray's
    # default, and what this module needs): imported from where they are defined, because a
    # type checker reads those packages' V1 names instead.
    from ray.train.v2.api.config import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.v2.torch.torch_trainer import TorchTrainer

    from .placement import NamePlacementGroups

    if payload.kind not in TRAIN_LOOPS:
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
        callbacks=[NamePlacementGroups(payload.job_id, payload.attempt)],
    )
    return TorchTrainer(
        TRAIN_LOOPS[payload.kind],
        train_loop_config={"payload": payload.to_dict()},
        scaling_config=scaling,
        run_config=run,
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
                task = ray.remote(run_profile).options(**profile_options(p))
                final = ray.get(task.remote(p.to_dict()))
            else:
                trainer = build_trainer(p, cpus_per_worker=self.cpus_per_worker)
                final = trainer.fit().return_value
        except Exception as exc:  # noqa: BLE001 - the trainer's final error, after its retries
            self.state, self.error = "failed", describe(exc)
            logger.error("job %s failed: %s", p.job_id, self.error)
            post_failure(p, exc)
            return
        self.state = (final or {}).get("outcome", "failed")
        _finish_from(p, final)

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
            self.state = "cancelled"
            post_outcome(
                self.payload,
                "cancelled",
                error=f"cancelled: the job did not stop within {grace_s:g}s; killed",
            )
            self._exit()

        threading.Thread(target=later, daemon=True, name="densenas-cancel").start()


_JOB_ACTOR: Any = None


@dataclass
class SweepReport:
    """What one :meth:`RayExecutor.sweep` removed."""

    groups_removed: int = 0
    cpus_released: float = 0.0
    actors_killed: list[int] = field(default_factory=list)


CLIENT_CONNECT_ATTEMPTS = 4
CLIENT_CONNECT_BACKOFF_S = 1.0
CAPACITY_TTL_S = 10.0
#: Serialises the first ``import ray`` / ``ray.init`` of this process (RayExecutor._ray).
_RAY_INIT_LOCK = threading.RLock()


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


class RayExecutor:
    """One detached named actor per job; see the module docstring.

    ``address`` (else ``RAY_ADDRESS``) names an existing cluster: ``ray://head:10001`` (the
    Ray Client, for a process on a host without a Ray node of the cluster, such as the API
    container) or ``head:6379`` (a driver on a host that runs a node of the cluster). Without
    one, an embedded single-machine Ray is started in-process (dashboard off) with
    ``num_cpus``/``object_store_memory`` — always a private one (``address="local"``), never
    another Ray that happens to run on the host (``/tmp/ray/ray_current_cluster``).
    """

    def __init__(
        self,
        address: str | None = None,
        namespace: str = "densenas",
        *,
        num_cpus: int | None = None,
        object_store_memory: int | None = None,
        cancel_grace_s: float = 60.0,
        cpus_per_worker: float = 1.0,
        log_to_driver: bool = False,
    ) -> None:
        self.cpus_per_worker = cpus_per_worker
        self.address = address
        self.log_to_driver = log_to_driver
        self.namespace = namespace
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.cancel_grace_s = cancel_grace_s
        self._started_ray = False
        self._suspects: set[int] = set()
        self._capacity: tuple[float, dict[str, float]] | None = None

    @property
    def cluster_address(self) -> str | None:
        """The existing cluster this executor joins; None: it starts an embedded Ray."""
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def _ray(self) -> Any:
        # One thread imports and initialises Ray: the dispatcher's first tick and an API request
        # (GET /v1/cluster) may come at once, and two concurrent `ray.init` start two local Rays
        # ("called ray.init twice") while a concurrent first import of ray's modules can see
        # one half initialised ("cannot import name 'PlacementGroup'").
        with _RAY_INIT_LOCK:
            return self._ray_locked()

    def _ray_locked(self) -> Any:
        address = self.cluster_address
        if address is None:
            _ensure_local_ray_env()  # before the first `import ray` of this process
        import ray

        if not ray.is_initialized():
            if address is not None:
                self._connect(ray, address)
            else:
                _warn_if_cluster_mode_imported()
                _in_owner_thread(
                    lambda: ray.init(
                        address="local",
                        namespace=self.namespace,
                        include_dashboard=False,
                        num_cpus=self.num_cpus or os.cpu_count() or 1,
                        object_store_memory=self.object_store_memory or 256 * 1024**2,
                        log_to_driver=self.log_to_driver,
                    )
                )
                self._started_ray = True
        return ray

    def _connect(self, ray: Any, address: str) -> None:
        """Join the cluster at ``address``. A Ray Client connection is retried: the head's
        client proxy starts one server process per connection, and that start can fail once
        ("Initialization failure from server", seen on a loaded head) where the next works."""
        attempts = CLIENT_CONNECT_ATTEMPTS if address.startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                ray.init(
                    address=address, namespace=self.namespace, log_to_driver=self.log_to_driver
                )
                return
            except ConnectionError as exc:  # ConnectionAbortedError, refused, ...
                if attempt == attempts:
                    raise
                logger.warning(
                    "connecting to %s failed (attempt %d/%d): %s; retrying",
                    address,
                    attempt,
                    attempts,
                    exc,
                )
                if ray.is_initialized():
                    ray.shutdown()
                time.sleep(CLIENT_CONNECT_BACKOFF_S * 2 ** (attempt - 1))

    def start(self, payload: JobPayload) -> None:
        """Start the job's actor; a second start of the same attempt is a no-op. An actor
        left from an earlier attempt (ended by the control plane while it still ran: the
        watchdog, a lost heartbeat) is killed first — its name is the job's."""
        ray = self._ray()
        global _JOB_ACTOR
        if _JOB_ACTOR is None:
            _JOB_ACTOR = ray.remote(JobActor)
        old = self.status(payload.job_id)
        if old is not None and old.get("attempt") != payload.attempt:
            logger.warning(
                "job %s: killing the actor of attempt %s before attempt %s",
                payload.job_id,
                old.get("attempt"),
                payload.attempt,
            )
            self._kill_and_wait(payload.job_id)
        _JOB_ACTOR.options(
            name=job_actor_name(payload.job_id),
            namespace=self.namespace,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=4,
            max_restarts=0,
            get_if_exists=True,
        ).remote(payload.to_dict(), self.cpus_per_worker)

    def capacity(self) -> dict[str, float]:
        """The cluster's total resources (``ray.cluster_resources()``, refreshed every 10 s:
        nodes come and go); the dispatcher claims only jobs that fit what running jobs leave."""
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[0] > CAPACITY_TTL_S:
            ray = self._ray()
            self._capacity = (
                now,
                {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
            )
        return dict(self._capacity[1])

    def cluster_state(self) -> dict[str, Any]:
        """Ray's totals and free CPUs/GPUs, this service's live placement groups and the jobs
        that have a job actor (operators, and the fault drills' "0 CPUs reserved")."""
        ray = self._ray()  # first: it imports ray (ray's modules are not safe to race)
        from ray.util.placement_group import placement_group_table

        from .placement import job_groups

        def pick(res: Mapping[str, float]) -> dict[str, float]:
            return {k: float(v) for k, v in res.items() if k in ("CPU", "GPU")}

        actors = sorted(
            j for j in map(parse_actor_name, ray.util.list_named_actors()) if j is not None
        )
        return {
            "executor": "ray",
            "total": pick(ray.cluster_resources()),
            "available": pick(ray.available_resources()),
            "placement_groups": [
                {
                    "name": g.name,
                    "job_id": g.job_id,
                    "attempt": g.attempt,
                    "state": g.state,
                    "cpus": g.cpus,
                }
                for g in job_groups(placement_group_table())
            ],
            "job_actors": actors,
        }

    def _actor(self, job_id: int) -> Any | None:
        ray = self._ray()
        try:
            return ray.get_actor(job_actor_name(job_id), namespace=self.namespace)
        except ValueError:
            return None

    def alive(self, job_id: int) -> bool:
        return self._actor(job_id) is not None

    def status(self, job_id: int, timeout: float = 10.0) -> dict[str, Any] | None:
        actor = self._actor(job_id)
        if actor is None:
            return None
        ray = self._ray()
        try:
            return ray.get(actor.status.remote(), timeout=timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return None

    def cancel(self, job_id: int, grace_s: float | None = None) -> None:
        actor = self._actor(job_id)
        if actor is not None:
            actor.cancel.remote(self.cancel_grace_s if grace_s is None else grace_s)

    def kill(self, job_id: int) -> None:
        actor = self._actor(job_id)
        if actor is not None:
            self._ray().kill(actor, no_restart=True)
        self._remove_groups(job_id)

    def _kill_and_wait(self, job_id: int, timeout: float = 30.0) -> None:
        """Kill the job's actor and wait until its name is free (a detached actor's name is
        released asynchronously after the kill)."""
        self.kill(job_id)
        deadline = time.monotonic() + timeout
        while self._actor(job_id) is not None and time.monotonic() < deadline:
            time.sleep(0.2)

    def _remove_groups(self, job_id: int) -> int:
        from .placement import remove_job_groups

        self._ray()
        try:
            return remove_job_groups(job_id)
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            logger.warning("job %s: placement groups not removed: %s", job_id, exc)
            return 0

    def sweep(self, running: Mapping[int, int]) -> SweepReport:
        """Remove what no running attempt owns; ``running`` maps each running job to its
        attempt. Placement groups of any other job or attempt go at once (a finished
        attempt's group is removed by its own trainer or job actor first; one still here
        reserves CPUs nobody uses). A job actor whose job is not running at that attempt is
        killed when it is still there at the next sweep (it may be posting its outcome)."""
        from .placement import job_groups, remove_groups, stale_groups

        ray = self._ray()
        report = SweepReport()
        from ray.util.placement_group import placement_group_table

        stale = stale_groups(job_groups(placement_group_table()), running)
        report.groups_removed = remove_groups(stale)
        report.cpus_released = sum(g.cpus for g in stale)
        suspects: set[int] = set()
        for name in ray.util.list_named_actors():
            job_id = parse_actor_name(name)
            if job_id is None:
                continue
            if job_id not in running:
                suspects.add(job_id)
            else:
                info = self.status(job_id, timeout=5.0)
                if info is not None and info.get("attempt") != running[job_id]:
                    suspects.add(job_id)
        for job_id in suspects & self._suspects:
            logger.warning("job %s: killing a job actor no running attempt owns", job_id)
            self.kill(job_id)
            report.actors_killed.append(job_id)
        self._suspects = suspects - set(report.actors_killed)
        return report

    def shutdown(self) -> None:
        """Disconnect; a cluster's detached job actors keep running (a local Ray ends)."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

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

The actor, its trainer and the embedded Ray's environment are in :mod:`workers.ray_job`, the
outcomes posted for a job in :mod:`workers.outcomes`; both re-exported here (``X as X``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .outcomes import finish_from, post_failure
from .outcomes import post_outcome as post_outcome
from .payload import JobPayload, job_actor_name, parse_actor_name
from .ray_job import LOCAL_RAY_ENV as LOCAL_RAY_ENV
from .ray_job import (
    JobActor,
    _ensure_local_ray_env,
    _in_owner_thread,
    _warn_if_cluster_mode_imported,
)
from .ray_job import build_trainer as build_trainer
from .ray_job import profile_options as profile_options
from .train_fns import run_job

logger = logging.getLogger(__name__)


class Executor(Protocol):
    def start(self, payload: JobPayload) -> None: ...

    def alive(self, job_id: int) -> bool: ...

    def cancel(self, job_id: int) -> None: ...

    def shutdown(self) -> None: ...


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
        finish_from(payload, final)

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

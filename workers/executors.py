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

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
            if payload.kind == "sweep":
                from .sweep import inline_trials, run_sweep

                final = run_sweep(payload, inline_trials(stop))
            else:
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

    def job_resources(self, job_id: int, storage_path: str | None = None) -> dict[str, Any]:
        """The job's process — this one: an inline job is a thread here, so the CPU and
        memory are the whole process's (every inline job and the control plane too)."""
        import socket

        entry = self._jobs.get(int(job_id))
        procs = []
        if entry is not None and entry[0].is_alive():
            pid = os.getpid()
            procs.append(
                _process(
                    "inline thread",
                    rank=0,
                    hostname=socket.gethostname(),
                    pid=pid,
                    state="ALIVE",
                )
            )
            usage = process_usage([pid]).get(pid)
            if usage is not None:
                tool = usage.pop("tool")
                where = USAGE_LOCAL.format(tool=tool)
                procs[0].update(usage, usage_source=f"{where} (the whole process)")
        return {
            "executor": "inline",
            "source": "this process",
            "attempt": None,
            "processes": _public(procs),
            "message": None if procs else f"job {job_id} runs in no thread of this process",
        }

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

    def alive_many(self, job_ids: Iterable[int]) -> set[int]:
        """The jobs among ``job_ids`` that have a job actor: one listing of the namespace's
        named actors (one GCS call) instead of a ``get_actor`` per job — a restarted
        dispatcher reconciles 10,000 running jobs with it (docs/capacity.md)."""
        ray = self._ray()
        wanted = {int(j) for j in job_ids}
        return wanted & set(self._named_jobs(ray))

    @staticmethod
    def _named_jobs(ray: Any) -> list[int]:
        names = ray.util.list_named_actors(all_namespaces=False)
        return [j for j in map(parse_actor_name, names) if j is not None]

    def _attempts(self, job_ids: Iterable[int], timeout: float = 5.0) -> dict[int, int | None]:
        """``{job: the attempt its actor runs}`` asked of all the actors at once (one wait on
        every ``status`` call); None where the actor did not answer in ``timeout``."""
        ray = self._ray()
        refs: dict[Any, int] = {}
        for job_id in job_ids:
            actor = self._actor(job_id)
            if actor is not None:
                refs[actor.status.remote()] = job_id
        out: dict[int, int | None] = dict.fromkeys(refs.values())
        if not refs:
            return out
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        for ref in ready:
            try:
                out[refs[ref]] = ray.get(ref).get("attempt")
            except ray.exceptions.RayActorError:
                pass
        return out

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
        named = self._named_jobs(ray)
        suspects = {j for j in named if j not in running}
        # An actor of another attempt of a running job: only a retried job (attempt > 1) can
        # have one (start kills the earlier attempt's first), so only those are asked, all at
        # once — not every running job's actor one after another (10,000 of them at scale).
        retried = [j for j in named if running.get(j, 1) > 1]
        for job_id, attempt in self._attempts(retried).items():
            if attempt is not None and attempt != running[job_id]:
                suspects.add(job_id)
        for job_id in suspects & self._suspects:
            logger.warning("job %s: killing a job actor no running attempt owns", job_id)
            self.kill(job_id)
            report.actors_killed.append(job_id)
        self._suspects = suspects - set(report.actors_killed)
        return report

    # -- where a job runs (GET /v1/jobs/{id}/resources) -------------------------------------

    def job_resources(self, job_id: int, storage_path: str | None = None) -> dict[str, Any]:
        """The processes of a running job — its job actor, the Ray Train controller the actor
        owns and the controller's workers (one per rank) — with node, pid, state and resource
        use. ``storage_path`` (the job's) lets the ranks' own markers name each worker's rank.

        Actors come from the GCS actor table (owner addresses link actor → controller →
        workers; it answers without a dashboard, which an embedded Ray has not); else from the
        Ray state API (``ray.util.state.list_actors``, needs the dashboard; it has no owner
        field, so workers are found by the job's placement groups and the controller is not
        listed); else the job actor's ``status()`` and the markers only. Resource use: psutil
        here for processes on this host, a ``num_cpus=0`` task pinned to the node elsewhere.
        Nothing raises: what could not be read is said in ``message``."""
        ray = self._ray()
        notes: list[str] = []
        name = job_actor_name(job_id)
        rows, source = self._actor_rows(ray, notes)
        status = self.status(job_id, timeout=5.0)
        attempt = status.get("attempt") if status else None
        markers = _markers(storage_path, job_id, attempt)
        if rows is not None:
            groups = self._job_group_ids(job_id, attempt, notes)
            procs = _link_job_actors(rows, name, groups)
            if source == "state-api":
                notes.append("the Ray state API names no actor's owner: no train controller")
        else:
            procs = []
            if status is not None:
                procs.append(_process("job actor", state=str(status.get("state")).upper()))
            procs += [
                _process("train worker", state="REPORTED", **_marker_fields(m))
                for m in markers.values()
            ]
            source = "job actor status and the ranks' markers"
        workers = [p for p in procs if p["role"] == "train worker"]
        for p in workers:
            m = markers.get(p["pid"]) if p["pid"] is not None else None
            if m is not None:
                p.update(rank=m.get("rank"), device=m.get("device"), hostname=m.get("hostname"))
        if len(workers) == 1 and workers[0]["rank"] is None:
            workers[0]["rank"] = 0  # one rank: rank 0 of 1
        for p in workers:
            if p["rank"] is not None:
                p["role"] = f"rank {p['rank']}"
        procs.sort(key=lambda p: (p["rank"] is not None, p["rank"] or 0))
        self._fill_nodes(ray, procs, notes)
        self._measure(ray, procs, notes)
        if not procs:
            notes.append(f"no live actor {name} in namespace {self.namespace}")
        return {
            "executor": "ray",
            "source": source,
            "attempt": attempt,
            "processes": _public(procs),
            "message": "; ".join(notes) or None,
        }

    def _actor_rows(self, ray: Any, notes: list[str]) -> tuple[list[dict] | None, str | None]:
        try:
            from ray._private.state import actors as gcs_actors

            table = gcs_actors()
            return [_gcs_row(a) for a in table.values()], "gcs-actor-table"
        except Exception as exc:  # noqa: BLE001 - Ray Client: no GCS connection here
            notes.append(f"GCS actor table unavailable ({type(exc).__name__})")
        try:
            from ray.util.state import list_actors

            listed = list_actors(
                filters=[("state", "!=", "DEAD")], detail=True, limit=10_000, timeout=5
            )
            return [_state_api_row(a) for a in listed], "state-api"
        except Exception as exc:  # noqa: BLE001 - no dashboard (embedded Ray)
            notes.append(f"Ray state API unavailable ({type(exc).__name__}: {str(exc)[:120]})")
        return None, None

    def _job_group_ids(self, job_id: int, attempt: Any, notes: list[str]) -> set[str]:
        from ray.util.placement_group import placement_group_table

        from .placement import job_groups

        try:
            return {
                g.id
                for g in job_groups(placement_group_table())
                if g.job_id == job_id and (attempt is None or g.attempt == attempt)
            }
        except Exception as exc:  # noqa: BLE001
            notes.append(f"placement groups unreadable ({type(exc).__name__})")
            return set()

    def _fill_nodes(self, ray: Any, procs: list[dict[str, Any]], notes: list[str]) -> None:
        try:
            nodes = {n["NodeID"]: n for n in ray.nodes()}
        except Exception as exc:  # noqa: BLE001
            notes.append(f"node table unreadable ({type(exc).__name__})")
            return
        for p in procs:
            node = nodes.get(p["node_id"] or "")
            if node is not None:
                p["node_ip"] = p["node_ip"] or node.get("NodeManagerAddress")
                p["hostname"] = p["hostname"] or node.get("NodeManagerHostname")

    def _local_node(self, ray: Any) -> str | None:
        """This process's Ray node (None through the Ray Client: the driver is elsewhere)."""
        if (self.cluster_address or "").startswith("ray://"):
            return None
        try:
            return str(ray.get_runtime_context().get_node_id())
        except Exception:  # noqa: BLE001
            return None

    def _measure(self, ray: Any, procs: list[dict[str, Any]], notes: list[str]) -> None:
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in procs:
            if p["pid"]:
                by_node.setdefault(p["node_id"] or "", []).append(p)
        local = self._local_node(ray)
        for node, group in by_node.items():
            pids = [p["pid"] for p in group]
            try:
                if node and node == local:
                    usage, how = process_usage(pids), USAGE_LOCAL
                else:
                    usage, how = self._probe(ray, node, pids), USAGE_PROBE
            except Exception as exc:  # noqa: BLE001 - a node that does not answer
                notes.append(f"usage on node {node[:12]} unavailable ({type(exc).__name__})")
                continue
            for p in group:
                if p["pid"] in usage:
                    found = dict(usage[p["pid"]])
                    tool = found.pop("tool")
                    p.update(found, usage_source=how.format(tool=tool))

    @staticmethod
    def _probe(ray: Any, node: str, pids: list[int]) -> dict[int, dict[str, Any]]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(process_usage).options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        return {int(k): v for k, v in ray.get(task.remote(pids), timeout=10).items()}

    def shutdown(self) -> None:
        """Disconnect; a cluster's detached job actors keep running (a local Ray ends)."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self._started_ray = False


# -- where a job runs and what it uses, and its checkpoints -------------------------------------

#: Ray Train (V2) actor classes of a job: the controller the job actor's ``trainer.fit()``
#: creates, and one worker per rank the controller creates (each the owner of the next).
TRAIN_CONTROLLER_CLASS = "TrainController"
TRAIN_WORKER_CLASS = "RayTrainWorker"
#: Actor states that still hold a process (the GCS keeps dead actors too).
_LIVE_ACTOR_STATES = frozenset({"ALIVE", "PENDING_CREATION", "RESTARTING", "DEPENDENCIES_UNREADY"})
USAGE_LOCAL = "{tool} on the control plane's host"
USAGE_PROBE = "{tool} in a Ray task on the process's node"


def _gpu_memory_by_pid() -> dict[int, int] | None:
    """GPU memory used per process on this host (``nvidia-smi --query-compute-apps``), or None
    where there is no NVIDIA driver. In a container the pids are the host's unless the
    container shares its pid namespace."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    used: dict[int, int] = {}
    for line in out.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().isdigit():
            used[int(pid)] = used.get(int(pid), 0) + int(mib) * 1024**2
    return used


def _psutil() -> Any:
    try:
        import psutil  # type: ignore[import-untyped]  # not declared: Ray vendors it
    except ImportError:  # a process that has not imported ray (which puts it on sys.path)
        return None
    return psutil


def _sample(pid: int) -> tuple[float, int, int, str] | None:
    """(CPU seconds so far, RSS bytes, threads, tool) of ``pid`` on this host, from psutil
    where importable, else Linux's ``/proc/<pid>/stat``; None when it is gone."""
    psutil = _psutil()
    if psutil is not None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                t = proc.cpu_times()
                return t.user + t.system, int(proc.memory_info().rss), proc.num_threads(), "psutil"
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # fields 3.. after the command's ')'
            stat = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
        ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
        cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime (fields 14, 15)
        return cpu, int(stat[21]) * page, int(stat[17]), "/proc"  # rss (24), threads (20)
    except (OSError, IndexError, ValueError):
        return None


def process_usage(pids: list[int], interval_s: float = 0.2) -> dict[int, dict[str, Any]]:
    """CPU % (of one core, over ``interval_s``), resident memory, threads and GPU memory of
    the processes ``pids`` on this host; a pid that is gone (or unreadable) is left out.
    ``tool`` says what measured it (psutil, or /proc where psutil is not importable)."""
    first = {pid: s for pid in pids if (s := _sample(pid)) is not None}
    if not first:
        return {}
    start = time.monotonic()
    time.sleep(interval_s)
    gpu = _gpu_memory_by_pid()
    usage: dict[int, dict[str, Any]] = {}
    for pid, (cpu0, _, _, _) in first.items():
        now = _sample(pid)
        if now is None:
            continue
        cpu1, rss, threads, tool = now
        usage[pid] = {
            "cpu_percent": round(100 * (cpu1 - cpu0) / (time.monotonic() - start), 1),
            "rss_bytes": rss,
            "num_threads": threads,
            "gpu_memory_bytes": None if gpu is None else gpu.get(pid, 0),
            "tool": tool,
        }
    return usage


#: The keys of one process in ``job_resources`` (None when unknown), after ``role``.
PROCESS_FIELDS = (
    "rank",
    "actor_id",
    "actor_class",
    "node_id",
    "node_ip",
    "hostname",
    "pid",
    "state",
    "device",
    "cpu_percent",
    "rss_bytes",
    "num_threads",
    "gpu_memory_bytes",
    "usage_source",
)


def _process(role: str, **fields: Any) -> dict[str, Any]:
    """One process of ``job_resources`` (extra keys are the linking's, dropped at the end)."""
    row: dict[str, Any] = dict.fromkeys(PROCESS_FIELDS)
    row.update(role=role, **fields)
    return row


def _public(procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: p.get(k) for k in ("role", *PROCESS_FIELDS)} for p in procs]


def _markers(storage_path: str | None, job_id: int, attempt: int | None) -> dict[int, dict]:
    """The ranks' own report (``<run dir>/workers/attempt<a>-rank<r>.json``, local storage
    only): ``{pid: marker}`` for ``attempt`` (or the newest attempt's)."""
    from urllib.parse import urlsplit

    from .storage import is_uri

    if storage_path is None or (is_uri(storage_path) and not storage_path.startswith("file://")):
        return {}
    local = urlsplit(storage_path).path if is_uri(storage_path) else storage_path
    directory = Path(local) / job_actor_name(job_id) / "workers"
    if not directory.is_dir():
        return {}
    found: dict[int, list[dict]] = {}
    for path in directory.glob("attempt*-rank*.json"):
        try:
            marker = json.loads(path.read_text())
            a = int(path.name[len("attempt") :].split("-", 1)[0])
        except (OSError, ValueError):
            continue
        found.setdefault(a, []).append(marker)
    if not found:
        return {}
    pick = attempt if attempt in found else max(found)
    return {int(m["pid"]): m for m in found[pick] if isinstance(m.get("pid"), int)}


def _link_job_actors(rows: list[dict[str, Any]], name: str, job_groups: set[str]) -> list[dict]:
    """This job's processes among the cluster's actors: the job actor (by ``name``), the Train
    controller it owns, and the Train workers the controller owns — or, where the rows carry no
    owner (the state API's), those in one of the job's placement groups (``job_groups``)."""
    live = [r for r in rows if r["state"] in _LIVE_ACTOR_STATES]
    job = next((r for r in live if r["name"] == name), None)
    if job is None:
        return []

    def owned_by(parent: dict[str, Any] | None, cls: str) -> list[dict[str, Any]]:
        return [
            r
            for r in live
            if r["actor_class"] == cls
            and (
                (parent is not None and r.get("owner") and r["owner"] == parent.get("address"))
                or (r.get("placement_group_id") in job_groups)
            )
        ]

    controllers = owned_by(job, TRAIN_CONTROLLER_CLASS)
    parents: list[dict[str, Any] | None] = list(controllers) or [None]
    workers = [w for c in parents for w in owned_by(c, TRAIN_WORKER_CLASS)]
    return [
        {**job, "role": "job actor"},
        *({**c, "role": "train controller"} for c in controllers),
        *({**w, "role": "train worker"} for w in workers),
    ]


def _gcs_row(a: Mapping[str, Any]) -> dict[str, Any]:
    """A row of ``ray._private.state.actors()`` (the GCS actor table) for _link_job_actors."""
    addr, owner = a.get("Address") or {}, a.get("OwnerAddress") or {}
    return _process(
        "",
        actor_id=a.get("ActorID"),
        actor_class=a.get("ActorClassName"),
        name=a.get("Name") or None,
        state=a.get("State"),
        pid=a.get("Pid") or None,
        node_id=addr.get("NodeID") or None,
        node_ip=addr.get("IPAddress") or None,
        address=(addr.get("IPAddress"), addr.get("Port")),
        owner=(owner.get("IPAddress"), owner.get("Port")),
    )


def _state_api_row(a: Any) -> dict[str, Any]:
    """An ``ActorState`` of ``ray.util.state.list_actors`` for _link_job_actors."""
    return _process(
        "",
        actor_id=a.actor_id,
        actor_class=a.class_name,
        name=a.name or None,
        state=a.state,
        pid=a.pid or None,
        node_id=a.node_id or None,
        placement_group_id=a.placement_group_id,
    )


def _marker_fields(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in ("rank", "node_id", "hostname", "pid", "device")}


def job_checkpoints(storage_path: str, job_id: int) -> list[dict[str, Any]]:
    """The complete checkpoints of job ``job_id`` under its ``storage_path`` (a path or a URI,
    read through pyarrow.fs like every checkpoint read), oldest first: name, uri, global_step,
    epoch, step_in_epoch, attempt (from ``meta.json``), size_bytes (the files in it) and
    created_at (``meta.json``'s write time, the last file written, epoch seconds)."""
    import pyarrow.fs as pafs

    from .storage import META_FILE, CheckpointStore, join

    store = CheckpointStore(join(storage_path, job_actor_name(job_id)))
    out = []
    for ckpt in store.checkpoints():
        files = store.fs.get_file_info(pafs.FileSelector(ckpt.path))
        try:
            with store.fs.open_input_stream(f"{ckpt.path}/{META_FILE}") as f:
                meta = json.loads(f.read().decode())
        except (OSError, ValueError):
            meta = {}
        out.append(
            {
                "name": ckpt.name,
                "uri": ckpt.uri,
                "global_step": ckpt.global_step,
                "epoch": meta.get("epoch"),
                "step_in_epoch": meta.get("step_in_epoch"),
                "attempt": meta.get("attempt"),
                "size_bytes": sum(int(i.size or 0) for i in files if i.type == pafs.FileType.File),
                "created_at": ckpt.mtime_ns / 1e9 if ckpt.mtime_ns > 0 else None,
            }
        )
    return out

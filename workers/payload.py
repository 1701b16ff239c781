"""The launch payload: everything a worker needs to run one job attempt, as plain JSON data.

The dispatcher builds it from the job row and hands it to an executor; it crosses process and
node boundaries (a Ray actor argument, a Ray Train ``train_loop_config``), so it holds only JSON
values. ``storage_path`` is where Ray Train persists checkpoints for this job; a retried attempt
gets the same path so it can resume from the last checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from densenas_core.specs import JOB_SPECS, Bounds, Doc, MaxLen, Spec

JOB_KINDS = ("search", "retrain", "profile", "sweep")


# -- where and how a job runs: the workers' part of its spec ------------------------------------
#
# A job spec holds the core's part (densenas_core.specs: what to compute) and these fields
# (how many workers, which devices, how often to checkpoint), declared here once like the
# core's: the executors and the control plane's capacity checks read them, and the control
# plane's request schemas are derived from both.

#: global steps between checkpoints: the search's default, and every retrain's interval
CHECKPOINT_EVERY = 50
Workers = Annotated[int, Bounds(ge=1, le=1024)]


@dataclass(frozen=True)
class SearchResources(Spec):
    """A search's workers (data-parallel, one GPU each with ``use_gpu``) and checkpoints."""

    WHAT: ClassVar[str] = "search"

    num_workers: Annotated[Workers, Doc("data-parallel workers, 1..1024")] = 1
    use_gpu: Annotated[bool, Doc("one GPU per worker")] = False
    checkpoint_every: Annotated[
        int,
        Bounds(ge=1, le=10_000_000),
        Doc("global steps between checkpoints (one is also taken after every epoch)"),
    ] = CHECKPOINT_EVERY

    @property
    def gpus_per_worker(self) -> float:
        return 1.0 if self.use_gpu else 0.0


@dataclass(frozen=True)
class RetrainResources(Spec):
    """A retrain's workers: ``num_nodes × workers_per_node`` ranks, GPUs per rank."""

    WHAT: ClassVar[str] = "retrain"
    checkpoint_every: ClassVar[int] = CHECKPOINT_EVERY

    num_nodes: Annotated[
        Workers, Doc("nodes, 1..1024 (ranks = num_nodes \u00d7 workers_per_node)")
    ] = 1
    workers_per_node: Annotated[Workers, Doc("ranks per node, 1..1024")] = 1
    gpus_per_worker: Annotated[float, Bounds(ge=0, le=64), Doc("GPUs per rank, 0..64 (0: CPU)")] = 0

    @property
    def num_workers(self) -> int:
        return self.num_nodes * self.workers_per_node


@dataclass(frozen=True)
class ProfileDevice(Spec):
    """The device class a profile measures (``gpu_type``: a Ray accelerator type)."""

    WHERE: ClassVar[str] = "device"

    device: Annotated[Literal["cpu", "cuda"], Doc("device class measured")] = "cpu"
    gpu_type: Annotated[
        str | None, MaxLen(100), Doc("Ray accelerator type to run on (cuda only); null: any")
    ] = None


@dataclass(frozen=True)
class ProfileResources(Spec):
    """A profile runs as one task on the device class it measures."""

    WHAT: ClassVar[str] = "profile"
    num_workers: ClassVar[int] = 1

    device: Annotated[ProfileDevice, Doc("the device measured")] = field(
        default_factory=ProfileDevice
    )

    @property
    def gpus_per_worker(self) -> float:
        return 1.0 if self.device.device == "cuda" else 0.0


Resources = SearchResources | RetrainResources | ProfileResources
#: the workers' part of each job kind's spec
JOB_RESOURCES: dict[str, type[Spec]] = {
    "search": SearchResources,
    "retrain": RetrainResources,
    "profile": ProfileResources,
}


def split_spec(kind: str, spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the core's part, the workers' part) of a ``kind`` job's ``spec``: the keys that are
    fields of ``JOB_RESOURCES[kind]`` go to the second, every other key to the first."""
    ours = {f.name for f in dataclasses.fields(JOB_RESOURCES[kind])}
    return (
        {k: v for k, v in spec.items() if k not in ours},
        {k: v for k, v in spec.items() if k in ours},
    )


def job_resources(kind: str, spec: Mapping[str, Any]) -> Any:
    """The :data:`Resources` a ``kind`` job's ``spec`` asks for (defaults filled in)."""
    return JOB_RESOURCES[kind].from_dict(split_spec(kind, spec)[1])


class PayloadError(ValueError):
    """A launch payload that cannot be run; the message names the field."""


@dataclass(frozen=True)
class JobPayload:
    job_id: int
    kind: str
    attempt: int
    spec: dict[str, Any]
    api_url: str
    job_token: str
    storage_path: str
    architecture: dict[str, Any] | None = None
    latency_table: dict[str, Any] | None = None
    #: a sweep's trials: ``[{job_id, trial, config, status}]`` (it runs those not succeeded)
    trials: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise PayloadError(f"kind: expected one of {JOB_KINDS}, got {self.kind!r}")
        if not isinstance(self.attempt, int) or self.attempt < 1:
            raise PayloadError(f"attempt: expected an integer >= 1, got {self.attempt!r}")
        if not isinstance(self.spec, Mapping):
            raise PayloadError("spec: expected an object")
        if self.kind == "retrain" and self.architecture is None:
            raise PayloadError("architecture: a retrain job needs the architecture document")
        if self.kind == "sweep" and not self.trials:
            raise PayloadError("trials: a sweep job needs its trials")

    @property
    def run_name(self) -> str:
        """The Ray Train run name; also the detached actor's name. It is the job's identity,
        so a retried attempt finds the checkpoints of the previous one under the same name."""
        return job_actor_name(self.job_id)

    @property
    def api_base(self) -> str:
        return self.api_url.rstrip("/")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobPayload:
        missing = [
            k
            for k in ("job_id", "kind", "spec", "api_url", "job_token", "storage_path")
            if k not in data
        ]
        if missing:
            raise PayloadError(f"missing field(s): {', '.join(missing)}")
        try:
            job_id = int(data["job_id"])
        except (TypeError, ValueError):
            raise PayloadError(f"job_id: expected an integer, got {data['job_id']!r}") from None
        return cls(
            job_id=job_id,
            kind=str(data["kind"]),
            attempt=int(data.get("attempt", 1)),
            spec=dict(data["spec"] or {}),
            api_url=str(data["api_url"]),
            job_token=str(data["job_token"]),
            storage_path=str(data["storage_path"]),
            architecture=dict(data["architecture"]) if data.get("architecture") else None,
            latency_table=dict(data["latency_table"]) if data.get("latency_table") else None,
            trials=[dict(t) for t in data["trials"]] if data.get("trials") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def core_spec(self) -> Any:
        """The core's part of the spec as its ``densenas_core.specs`` type (a ``SearchSpec``,
        ``RetrainSpec`` or ``ProfileSpec``; defaults filled in, validated)."""
        return JOB_SPECS[self.kind].from_dict(split_spec(self.kind, self.spec)[0])

    def resources(self) -> Any:
        """The workers' part of the spec (:data:`Resources`)."""
        return job_resources(self.kind, self.spec)


def job_actor_name(job_id: int) -> str:
    return f"densenas-job-{job_id}"


def parse_actor_name(name: str) -> int | None:
    """The job id of a :func:`job_actor_name`, else None."""
    prefix = "densenas-job-"
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


# -- the worker protocol's shared vocabulary (docs/DESIGN.md "Worker ⇄ control plane") ---------

#: Event types a job token may post: what the core loops report (densenas_core._loop.SLOT),
#: ``error`` (a failure the worker reports about itself) and ``trial`` (a sweep's worker: a
#: trial's latest figures). Control-plane types (``status``,
#: ``cancel_requested``, ``derived``, …) are written only by the service.
WORKER_EVENT_TYPES = frozenset({"step", "epoch", "arch", "log", "error", "trial"})

TRACEBACK_TAIL_LINES = 50
TRACEBACK_TAIL_CHARS = 8000


def tail(
    text: str | None, lines: int = TRACEBACK_TAIL_LINES, chars: int = TRACEBACK_TAIL_CHARS
) -> str | None:
    """The last ``lines`` lines of ``text``, at most ``chars`` characters (a traceback's end
    names the error; its start is frames the user did not write)."""
    if not text:
        return None
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out if len(out) <= chars else "…" + out[-(chars - 1) :]

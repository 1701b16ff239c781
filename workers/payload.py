"""The launch payload: everything a worker needs to run one job attempt, as plain JSON data.

The dispatcher builds it from the job row and hands it to an executor; it crosses process and
node boundaries (a Ray actor argument, a Ray Train ``train_loop_config``), so it holds only JSON
values. ``storage_path`` is where Ray Train persists checkpoints for this job; a retried attempt
gets the same path so it can resume from the last checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

JOB_KINDS = ("search", "retrain", "profile")


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

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise PayloadError(f"kind: expected one of {JOB_KINDS}, got {self.kind!r}")
        if not isinstance(self.attempt, int) or self.attempt < 1:
            raise PayloadError(f"attempt: expected an integer >= 1, got {self.attempt!r}")
        if not isinstance(self.spec, Mapping):
            raise PayloadError("spec: expected an object")
        if self.kind == "retrain" and self.architecture is None:
            raise PayloadError("architecture: a retrain job needs the architecture document")

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
        missing = [k for k in ("job_id", "kind", "spec", "api_url", "job_token", "storage_path")
                   if k not in data]
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
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def job_actor_name(job_id: int) -> str:
    return f"densenas-job-{job_id}"


def parse_actor_name(name: str) -> int | None:
    """The job id of a :func:`job_actor_name`, else None."""
    prefix = "densenas-job-"
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


# -- the worker protocol's shared vocabulary (docs/DESIGN.md "Worker ⇄ control plane") ---------

#: Event types a job token may post: what the core loops report (densenas_core._loop.SLOT) and
#: ``error`` (a failure the worker reports about itself). Control-plane types (``status``,
#: ``cancel_requested``, ``derived``, …) are written only by the service.
WORKER_EVENT_TYPES = frozenset({"step", "epoch", "arch", "log", "error"})

TRACEBACK_TAIL_LINES = 50
TRACEBACK_TAIL_CHARS = 8000


def tail(text: str | None, lines: int = TRACEBACK_TAIL_LINES,
         chars: int = TRACEBACK_TAIL_CHARS) -> str | None:
    """The last ``lines`` lines of ``text``, at most ``chars`` characters (a traceback's end
    names the error; its start is frames the user did not write)."""
    if not text:
        return None
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return out if len(out) <= chars else "…" + out[-(chars - 1):]

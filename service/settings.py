"""Process configuration: one pydantic-settings ``Settings`` object per process.

Everything that differs between a laptop and a cluster is read from ``DENSENAS_*`` environment
variables (``RAY_ADDRESS`` too, the name Ray's own tools use), so the CLI, ``serve`` and the
tests build the same object. ``env="prod"`` refuses the defaults that are only safe on one
machine: a SQLite file relative to whatever the current directory happens to be, a database
password everybody knows, or a configured admin token too short to be a secret.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers.payload import RetrainResources, SearchResources

#: Passwords that appear in examples, compose files and tutorials; never acceptable in prod.
_KNOWN_PASSWORDS = frozenset({"", "densenas", "postgres", "password", "secret", "changeme"})
#: Where distribution dataset packages install their files (``dataset-fashion-mnist``: see
#: docs/operations.md §Fashion-MNIST package); one of the default dataset roots.
SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")
#: The job specs' own caps (workers.payload): what a configured cluster is held to by default.
SPEC_MAX_WORKERS = int(SearchResources.bounds("num_workers").le or 0)
SPEC_MAX_GPUS_PER_WORKER = float(RetrainResources.bounds("gpus_per_worker").le or 0)


def url_host(host: str) -> str:
    """``host`` as the host part of a URL other processes call: a wildcard bind address is no
    destination (the local host name is), an IPv6 literal needs brackets."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return socket.gethostname()
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DENSENAS_", extra="ignore", validate_default=True)

    env: Literal["dev", "prod"] = "dev"
    database_url: str = "sqlite:///./densenas.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: The base URL workers use to reach the API (Ray workers may run on other nodes). Unset, it
    #: follows ``host``/``port`` (``serve --host H --port P`` → ``http://H:P``; a wildcard bind
    #: address → the local host name).
    public_url: str = "http://127.0.0.1:8000"
    #: Holds the bootstrap admin token file and the checkpoints of every job.
    data_dir: Path = Path("./.densenas")
    #: Where job checkpoints live (``<storage_uri>/job-<id>``): a path every node shares, or a
    #: URI pyarrow.fs resolves (``file:///…``, ``s3://bucket/prefix``, ``gs://…``, ``hdfs://…``,
    #: ``abfs://…``). Unset: ``<data_dir>/checkpoints``.
    storage_uri: str | None = None
    #: When set, the bootstrap admin token is this value instead of a freshly minted one
    #: (a Kubernetes secret, say); it is still stored hashed only.
    admin_token: SecretStr | None = None

    executor: Literal["ray", "inline", "none"] = "ray"
    ray_address: str | None = Field(
        None, validation_alias=AliasChoices("DENSENAS_RAY_ADDRESS", "RAY_ADDRESS")
    )
    #: The Ray dashboard users can open (``http://head:8265``), linked from a job's page and its
    #: ``GET /v1/jobs/{id}/resources``; unset: no link (an embedded Ray runs without one).
    ray_dashboard_url: str | None = None

    poll_interval_s: float = Field(1.0, gt=0, le=60)
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    #: How often the dispatcher asks the executor to remove what no running attempt owns
    #: (Ray placement groups and job actors of ended attempts: RayExecutor.sweep).
    sweep_interval_s: float = Field(10.0, gt=0)
    #: How many queued jobs one dispatcher tick claims at most.
    claim_batch: int = Field(4, ge=1, le=100)
    #: Jobs running at once across the deployment (0 = no limit; Ray queues on resources).
    max_running_jobs: int = Field(0, ge=0)
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_s: float = Field(5.0, ge=0)
    retry_backoff_factor: float = Field(2.0, ge=1)
    retry_backoff_max_s: float = Field(300.0, ge=0)
    #: Progress watchdog (service.watchdog): a running attempt that heartbeats but reports no
    #: ``step`` event is ended (retried while attempts remain, its worker killed) after
    #: ``watchdog_startup_s`` from its claim until its first step, then after
    #: ``max(watchdog_min_s, watchdog_factor × its mean time between step reports)`` since the
    #: last one (the floor covers each epoch's evaluation). ``watchdog_factor = 0`` turns it off.
    watchdog_startup_s: float = Field(900.0, gt=0)
    watchdog_min_s: float = Field(300.0, gt=0)
    watchdog_factor: float = Field(20.0, ge=0)
    #: Largest request body accepted (search results carry architecture docs, profile
    #: results whole latency tables).
    max_payload_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    sse_ping_s: float = Field(15.0, gt=0)
    sse_poll_s: float = Field(0.5, gt=0)
    #: How long a verified token is trusted without a database look-up (0: never cached).
    #: A revocation (``DELETE /v1/tokens/{id}``, a job's worker tokens revoked when it ends)
    #: empties the cache of this process at once, and on PostgreSQL that of every other API
    #: process within milliseconds (NOTIFY). This bound is the fallback: a process that missed
    #: the notification (its listening connection was down) trusts a revoked token at most
    #: this many seconds — and on reconnecting it drops its cache anyway.
    token_cache_s: float = Field(2.0, ge=0, le=60)
    #: Serve ``GET /v1/jobs/{id}`` below FastAPI (service.hotpath): same answers, ~1/4 the CPU.
    hot_path: bool = True
    run_migrations: bool = True
    log_level: str = "info"

    # -- admission (service.admission): what a job may ask for -----------------------------
    #: Custom search spaces: routing blocks, candidate paths (block pairs within
    #: max_connections), channels of any block (stem and tail included), basic layers over all
    #: blocks, candidate ops per row (align_ops, layer_ops), the space's input size.
    max_space_blocks: int = Field(64, ge=1)
    max_space_paths: int = Field(1024, ge=1)
    max_space_channels: int = Field(4096, ge=1)
    max_space_layers: int = Field(512, ge=0)
    max_space_ops: int = Field(16, ge=1)
    max_space_input_size: int = Field(1024, ge=8)
    #: The supernet with every candidate op (separate weights, an upper bound), in closed
    #: form at the job's resolution: parameters, and mult-adds of one image.
    max_supernet_params: int = Field(1_000_000_000, ge=1)
    max_supernet_mult_adds: int = Field(200_000_000_000, ge=1)
    #: Workers of one job (search ``num_workers``, retrain ``num_nodes × workers_per_node``);
    #: unset: the local CPU count where this process runs the jobs itself (local Ray, inline),
    #: else the specs' own cap (1024).
    max_workers_per_job: int | None = Field(None, ge=1)
    #: Nodes one retrain may spread over; unset: 1 for local Ray / inline, else 1024.
    max_nodes_per_job: int | None = Field(None, ge=1)
    #: GPUs one worker may ask for (retrain ``gpus_per_worker``; 1 for a search with
    #: ``use_gpu``, a cuda profile); unset: the local GPU count for local Ray / inline, else 64.
    max_gpus_per_worker: float | None = Field(None, ge=0)
    #: GPUs one job may hold in all; unset: the local GPU count for local Ray / inline, else
    #: no bound beyond the per-worker one.
    max_gpus_per_job: float | None = Field(None, ge=0)
    #: Directories a job's ``dataset.root`` must lie in (after resolving symlinks); a JSON
    #: list or paths separated by ``os.pathsep``. Unset: ``<data_dir>/datasets`` and
    #: ``SYSTEM_DATASETS_DIR`` (not ``data_dir`` itself: it holds the admin token and
    #: checkpoints).
    dataset_roots: Annotated[list[Path] | None, NoDecode] = None

    @field_validator("storage_uri")
    @classmethod
    def _check_storage_uri(cls, value: str | None) -> str | None:
        from workers.storage import check_storage_uri

        if value is None or not value.strip():
            return None
        try:
            return check_storage_uri(value)
        except ValueError as exc:
            raise ValueError(f"DENSENAS_STORAGE_URI: {exc}") from None

    @field_validator("dataset_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [p for p in text.split(os.pathsep) if p.strip()]
        return value

    @property
    def allowed_dataset_roots(self) -> list[Path]:
        if self.dataset_roots is not None:
            return list(self.dataset_roots)
        return [Path(self.data_dir) / "datasets", SYSTEM_DATASETS_DIR]

    @property
    def runs_jobs_locally(self) -> bool:
        """Jobs run on the local host: inline, or a Ray started in-process (no RAY_ADDRESS)."""
        return self.executor == "inline" or (self.executor == "ray" and not self.ray_address)

    @property
    def workers_capacity(self) -> int:
        if self.max_workers_per_job is not None:
            return self.max_workers_per_job
        return _local_cpus() if self.runs_jobs_locally else SPEC_MAX_WORKERS

    @property
    def nodes_capacity(self) -> int:
        if self.max_nodes_per_job is not None:
            return self.max_nodes_per_job
        return 1 if self.runs_jobs_locally else SPEC_MAX_WORKERS

    @property
    def gpus_per_worker_capacity(self) -> float:
        if self.max_gpus_per_worker is not None:
            return self.max_gpus_per_worker
        return float(_local_gpus()) if self.runs_jobs_locally else SPEC_MAX_GPUS_PER_WORKER

    @property
    def gpus_per_job_capacity(self) -> float | None:
        if self.max_gpus_per_job is not None:
            return self.max_gpus_per_job
        return float(_local_gpus()) if self.runs_jobs_locally else None

    @property
    def admin_token_path(self) -> Path:
        return Path(self.data_dir) / "admin_token"

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.data_dir) / "checkpoints"

    @property
    def checkpoint_storage(self) -> str:
        """``storage_uri``, else the absolute ``<data_dir>/checkpoints``."""
        return self.storage_uri or str(self.checkpoints_dir.resolve())

    def job_storage_path(self, job_id: int) -> str:
        """A job's ``storage_path`` (every attempt's): ``<checkpoint storage>/job-<id>``."""
        from workers.storage import join

        return join(self.checkpoint_storage, f"job-{job_id}")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _public_url_follows_the_bind_address(self) -> Settings:
        if "public_url" not in self.model_fields_set:
            self.public_url = f"http://{url_host(self.host)}:{self.port}"
        return self

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> Settings:
        if self.env != "prod":
            return self
        problems = []
        if self.is_sqlite:
            path = self.database_url.split("///", 1)[-1] if "///" in self.database_url else ""
            if not path or path == ":memory:" or not Path(path).is_absolute():
                problems.append(
                    "database_url: a SQLite file relative to the working directory "
                    "(or in memory) is not a production database; use PostgreSQL "
                    "or an absolute path"
                )
        else:
            password = urlsplit(self.database_url.replace("+psycopg", "")).password
            if password is None or password in _KNOWN_PASSWORDS:
                problems.append("database_url: missing or well-known database password")
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 24:
            problems.append("admin_token: shorter than 24 characters")
        if problems:
            raise ValueError("refusing env=prod: " + "; ".join(problems))
        return self


def _local_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@functools.cache
def _local_gpus() -> int:
    """CUDA devices this process sees (what a local Ray cluster would offer); 0 without CUDA."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - no usable CUDA is no GPU
        return 0

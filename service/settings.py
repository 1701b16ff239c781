"""Process configuration: one pydantic-settings ``Settings`` object per process.

Everything that differs between a laptop and a cluster is read from ``DENSENAS_*`` environment
variables (``RAY_ADDRESS`` too, the name Ray's own tools use), so the CLI, ``serve`` and the
tests build the same object. ``env="prod"`` refuses the defaults that are only safe on one
machine: a SQLite file relative to whatever the current directory happens to be, a database
password everybody knows, or a configured admin token too short to be a secret.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Passwords that appear in examples, compose files and tutorials; never acceptable in prod.
_KNOWN_PASSWORDS = frozenset({"", "densenas", "postgres", "password", "secret", "changeme"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DENSENAS_", extra="ignore",
                                      validate_default=True)

    env: Literal["dev", "prod"] = "dev"
    database_url: str = "sqlite:///./densenas.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: The base URL workers use to reach the API (Ray workers may run on other nodes).
    public_url: str = "http://127.0.0.1:8000"
    #: Holds the bootstrap admin token file and the checkpoints of every job.
    data_dir: Path = Path("./.densenas")
    #: When set, the bootstrap admin token is this value instead of a freshly minted one
    #: (a Kubernetes secret, say); it is still stored hashed only.
    admin_token: SecretStr | None = None

    executor: Literal["ray", "inline", "none"] = "ray"
    ray_address: str | None = Field(
        None, validation_alias=AliasChoices("DENSENAS_RAY_ADDRESS", "RAY_ADDRESS"))

    poll_interval_s: float = Field(1.0, gt=0, le=60)
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    #: How many queued jobs one dispatcher tick claims at most.
    claim_batch: int = Field(4, ge=1, le=100)
    #: Jobs running at once across the deployment (0 = no limit; Ray queues on resources).
    max_running_jobs: int = Field(0, ge=0)
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_s: float = Field(5.0, ge=0)
    retry_backoff_factor: float = Field(2.0, ge=1)
    retry_backoff_max_s: float = Field(300.0, ge=0)
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

    @property
    def admin_token_path(self) -> Path:
        return Path(self.data_dir) / "admin_token"

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.data_dir) / "checkpoints"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @model_validator(mode="after")
    def _refuse_insecure_prod(self) -> "Settings":
        if self.env != "prod":
            return self
        problems = []
        if self.is_sqlite:
            path = self.database_url.split("///", 1)[-1] if "///" in self.database_url else ""
            if not path or path == ":memory:" or not Path(path).is_absolute():
                problems.append("database_url: a SQLite file relative to the working directory "
                                "(or in memory) is not a production database; use PostgreSQL "
                                "or an absolute path")
        else:
            password = urlsplit(self.database_url.replace("+psycopg", "")).password
            if password is None or password in _KNOWN_PASSWORDS:
                problems.append("database_url: missing or well-known database password")
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 24:
            problems.append("admin_token: shorter than 24 characters")
        if problems:
            raise ValueError("refusing env=prod: " + "; ".join(problems))
        return self

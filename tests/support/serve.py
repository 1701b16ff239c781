"""A real ``densenas serve`` subprocess (the installed console script) with its own data dir
and database, on a free port of 127.0.0.1 — for the fault drills, the Ray reconcile test, the
PostgreSQL replica tests and ``bench/fault_drills.py`` — and the tiny search those run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .net import free_port
from .waiting import wait_for

DENSENAS = str(Path(sys.executable).with_name("densenas"))
TERMINAL = {"succeeded", "failed", "cancelled"}
#: A search of seconds on CPU that checkpoints every 2 steps (a restart resumes from one).
SPEC = {
    "space": "mbv2-small",
    "dataset": {"name": "synthetic", "limit_train": 256, "limit_val": 64},
    "epochs": 3,
    "warmup_epochs": 1,
    "batch_size": 32,
    "seed": 0,
    "checkpoint_every": 2,
}


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """``predicate()``'s first truthy value, polled every 0.3 s (a subprocess's pace)."""
    return wait_for(predicate, timeout, 0.3, what)


class Server:
    """A real `densenas serve` subprocess with its own data dir and database."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        executor: str = "inline",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DENSENAS_DATABASE_URL": database_url,
            "DENSENAS_DATA_DIR": str(tmp / "data"),
            "DENSENAS_PUBLIC_URL": self.url,
            "DENSENAS_POLL_INTERVAL_S": "0.2",
            "DENSENAS_HEARTBEAT_TIMEOUT_S": "20",
            "DENSENAS_RETRY_BACKOFF_S": "0",
            "DENSENAS_LOG_LEVEL": "warning",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            **(extra_env or {}),
        }
        self.executor = executor
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # the server writes to it for as long as it runs (one log per start)
        log = open(self.tmp / f"serve-{time.time():.0f}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [DENSENAS, "serve", "--port", str(self.port), "--executor", self.executor],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.tmp / log.name).read_text()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("densenas serve did not become healthy")

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def client(self) -> httpx.Client:
        token = (self.tmp / "data" / "admin_token").read_text().strip()
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

"""An executor for the control plane whose "workers" are threads that speak the worker HTTP
protocol to the live server with their job token, exactly as a Ray worker would — test
infrastructure, not a stub of the service. The behaviours: :func:`succeed`, :func:`fail`,
:func:`vanish`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .docs import latency_table_doc, small_arch_doc


def _post(payload: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{payload.api_url}/v1/jobs/{payload.job_id}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {payload.job_token}"},
        timeout=30,
    )


def succeed(payload: Any, steps: int = 3) -> None:
    """Report a few steps and an epoch, then complete with the kind's result."""
    events = [
        {
            "seq": i,
            "type": "step",
            "data": {"phase": "weights", "epoch": 0, "step": i, "loss": 2.0 - 0.1 * i},
        }
        for i in range(steps)
    ]
    events.append({"seq": steps, "type": "epoch", "data": {"epoch": 0, "val_acc": 0.5}})
    _post(payload, "events", {"events": events}).raise_for_status()
    if payload.kind == "search":
        result = {
            "architecture": small_arch_doc(f"found-by-{payload.job_id}"),
            "arch_params": {"alpha": [[0.5, 0.5]], "beta": [[1.0]]},
            "metrics": {"val_acc": 0.5},
            "measured_latency": {"test-cpu": 3.5},
        }
    elif payload.kind == "retrain":
        result = {"metrics": {"top1": 71.5, "top5": 90.1, "loss": 1.1}}
    else:
        result = {"latency_table": latency_table_doc(small_arch_doc())}
    _post(payload, "complete", {"outcome": "succeeded", "result": result}).raise_for_status()


def fail(payload: Any) -> None:
    _post(
        payload,
        "events",
        {"events": [{"seq": 0, "type": "log", "data": {"message": "about to fail"}}]},
    )
    _post(
        payload,
        "complete",
        {"outcome": "failed", "error": "RuntimeError: CUDA out of memory (simulated)"},
    )


def vanish(payload: Any) -> None:
    """A worker that dies right away without a word (its process was killed)."""


@dataclass
class FakeExecutor:
    """Runs ``behaviour(payload)`` in a thread per attempt; ``alive`` is what the test says."""

    behaviour: Callable[[Any], None] = succeed
    alive_answer: bool | Callable[[int], bool] = False
    start_error: Exception | None = None
    started: list[Any] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, payload: Any) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started.append(payload)

        def run() -> None:
            try:
                self.behaviour(payload)
            except BaseException as e:  # noqa: BLE001 — surfaced by the tests
                self.errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def alive(self, job_id: int) -> bool:
        a = self.alive_answer
        return a(job_id) if callable(a) else a

    def cancel(self, job_id: int) -> None:
        self.cancelled.append(job_id)

    def shutdown(self) -> None:
        for t in self.threads:
            t.join(10)

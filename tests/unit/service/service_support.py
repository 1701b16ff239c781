"""Test infrastructure for the control plane (not stubs of it): a real uvicorn server on a free
port, and a fake executor whose "workers" are threads that speak the worker HTTP protocol to
that server with their job token, exactly as a Ray worker would.

Imported by tests/unit/service (same directory) and tests/integration (through sys.path).
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service import jobs
from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[3]


def small_arch_doc(name: str = "test-arch") -> dict[str, Any]:
    """A valid architecture document (DenseNAS-C at 32 px, 10 classes)."""
    from densenas_core.arch import get_arch

    return get_arch("densenas-c").replace(input_size=32, num_classes=10, name=name).to_dict()


def latency_table_doc(arch_doc: dict[str, Any], ms_per_op: float = 0.5,
                      device_name: str = "test-cpu") -> dict[str, Any]:
    """A latency table with an entry for every op of ``arch_doc`` (``ms_per_op`` each)."""
    from densenas_core.arch import get_arch, op_sites
    from densenas_core.latency import LatencyStat, LatencyTable

    arch = get_arch(arch_doc)
    table = LatencyTable(device_name=device_name, device_kind="cpu", batch=1,
                         input_size=arch.input_size)
    for s in op_sites(arch, arch.input_size):
        table.entries[table.key(s.op, s.c_in, s.c_out, s.stride, s.h, s.w)] = LatencyStat(
            ms_per_op, ms_per_op, ms_per_op, 0.0, 10)
    return table.to_dict()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """``create_app(settings, executor)`` served by uvicorn in a thread on a pre-bound port."""

    def __init__(self, settings_factory: Callable[[str], Settings], executor: Any = None,
                 **app_kw: Any) -> None:
        self.sock = free_socket()
        host, port = self.sock.getsockname()
        self.url = f"http://{host}:{port}"
        self.settings = settings_factory(self.url)
        self.app = create_app(self.settings, executor, **app_kw)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.state.stopping.set()
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    @property
    def dispatcher(self):
        return self.app.state.dispatcher

    def admin_token(self) -> str:
        return self.settings.admin_token_path.read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


# -- fake executor -----------------------------------------------------------------------------

def _post(payload: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{payload.api_url}/v1/jobs/{payload.job_id}/{path}", json=body,
                      headers={"Authorization": f"Bearer {payload.job_token}"}, timeout=30)


def succeed(payload: Any, steps: int = 3) -> None:
    """Report a few steps and an epoch, then complete with the kind's result."""
    events = [{"seq": i, "type": "step", "data": {"phase": "weights", "epoch": 0, "step": i,
                                                    "loss": 2.0 - 0.1 * i}}
              for i in range(steps)]
    events.append({"seq": steps, "type": "epoch", "data": {"epoch": 0, "val_acc": 0.5}})
    _post(payload, "events", {"events": events}).raise_for_status()
    if payload.kind == "search":
        result = {"architecture": small_arch_doc(f"found-by-{payload.job_id}"),
                  "arch_params": {"alpha": [[0.5, 0.5]], "beta": [[1.0]]},
                  "metrics": {"val_acc": 0.5}, "measured_latency": {"test-cpu": 3.5}}
    elif payload.kind == "retrain":
        result = {"metrics": {"top1": 71.5, "top5": 90.1, "loss": 1.1}}
    else:
        result = {"latency_table": latency_table_doc(small_arch_doc())}
    _post(payload, "complete", {"outcome": "succeeded", "result": result}).raise_for_status()


def fail(payload: Any) -> None:
    _post(payload, "events", {"events": [{"seq": 0, "type": "log",
                                          "data": {"message": "about to fail"}}]})
    _post(payload, "complete", {"outcome": "failed",
                                "error": "RuntimeError: CUDA out of memory (simulated)"})


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
            except BaseException as e:  # surfaced by the tests
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


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_status(client: httpx.Client, job_id: int, statuses: set[str] | str,
                timeout: float = 30.0) -> dict[str, Any]:
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def check() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in wanted else None

    return wait_for(check, timeout, what=f"job {job_id} to be {sorted(wanted)}")


@contextlib.contextmanager
def sessions(url: str) -> Iterator[Any]:
    from service.db import make_engine, make_session_factory

    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def space_latency_table_doc(space: str = "mbv2-small", input_size: int = 32,
                            in_channels: int = 1, num_classes: int = 10,
                            ms_per_mmadd: float = 1.0) -> dict[str, Any]:
    """A latency table covering every candidate op of ``space`` (latency ∝ mult-adds)."""
    from densenas_core.flops import op_mult_adds
    from densenas_core.latency import LatencyStat, LatencyTable, space_op_signatures
    from densenas_core.spaces import get_space

    table = LatencyTable(device_name="proportional", device_kind="cpu", batch=1,
                         input_size=input_size)
    for sig in space_op_signatures(get_space(space), input_size, in_channels=in_channels,
                                   num_classes=num_classes):
        ms = op_mult_adds(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h) * ms_per_mmadd / 1e6
        table.entries[table.key(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)] = \
            LatencyStat(ms, ms, ms, 0.0, 5)
    return table.to_dict()


# -- shared checks of the hot read path and of stream wake-ups ---------------------------------

def produce_jobs(live: LiveServer) -> list[int]:
    """A succeeded search (an architecture), a succeeded profile (a latency table) and a
    queued job, through the live server's dispatcher (its executor must run ``succeed``)."""
    c = live.client(live.admin_token())
    done = [wait_status(c, c.post("/v1/jobs", json={"kind": kind}).json()["id"],
                        {"succeeded", "failed"}) for kind in ("search", "profile")]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    live.dispatcher.stop()
    queued = c.post("/v1/jobs", json={"kind": "search", "priority": 3}).json()
    return [d["id"] for d in done] + [queued["id"]]


def assert_job_reads_match(hot: Any, plain: Any, job_ids: list[int],
                           callers: dict[str, dict[str, str]]) -> None:
    """``GET /v1/jobs/...`` answers alike — status, content type, bytes — from an app with
    the hot path (``hot``) and one without (``plain``), for every caller and id shape."""
    paths = [f"/v1/jobs/{i}" for i in job_ids] + [
        f"/v1/jobs/{job_ids[0]}?unused=1", f"/v1/jobs/00{job_ids[0]}", "/v1/jobs/987654",
        "/v1/jobs/0", "/v1/jobs/abc", "/v1/jobs/-1", "/v1/jobs/99999999999999999999"]
    seen = set()
    for who, headers in callers.items():
        for path in paths:
            a, b = hot.get(path, headers=headers), plain.get(path, headers=headers)
            assert (a.status_code, a.headers.get("content-type"), a.content) == \
                (b.status_code, b.headers.get("content-type"), b.content), (who, path)
            seen.add(a.status_code)
    assert {200, 401, 403, 404, 422} <= seen, seen


def first_event_after_post(stream_from: LiveServer, post_to: LiveServer,
                           timeout: float = 20.0) -> float:
    """Seconds from a worker's ``POST /events`` (to ``post_to``) until an SSE client of
    ``stream_from`` receives that event."""
    admin = stream_from.client(stream_from.admin_token())
    admin.post("/v1/jobs", json={"kind": "search"}).raise_for_status()
    with post_to.app.state.session_factory() as s:
        [(job, token)] = jobs.claim(s, "signals-test", 1)
    jid = job.id
    arrived: list[float] = []
    opened = threading.Event()

    def listen() -> None:
        with contextlib.suppress(httpx.ReadTimeout), admin.stream(
                "GET", f"/v1/jobs/{jid}/events", timeout=httpx.Timeout(timeout)) as r:
            for line in r.iter_lines():
                opened.set()
                if line.startswith("data:") and '"marker"' in line:
                    arrived.append(time.perf_counter())
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(timeout), "the stream sent nothing"
    time.sleep(0.5)  # the stream has read what exists and is waiting
    sent = time.perf_counter()
    r = post_to.client(token).post(f"/v1/jobs/{jid}/events", json={
        "events": [{"seq": 0, "type": "log", "data": {"marker": True}}]})
    assert r.status_code == 200, r.text
    t.join(timeout)
    assert arrived, "the event never arrived"
    return arrived[0] - sent

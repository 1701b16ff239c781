"""Browser tests: the real app on uvicorn (SQLite, executor "none") driven by headless Chromium.

Seeding goes through the REST API where a user would act, and through the worker routes with
the per-job token that ``service.jobs.claim`` mints (what the dispatcher does), so the pages see
exactly the data a real run produces. No executor runs: a test plays the worker itself.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


# -- the live server -------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    app: Any

    def session(self):
        return self.app.state.session_factory()

    def token(self, name: str, project: str = "default", admin: bool = False) -> str:
        from service.tokens import create_token

        with self.session() as s:
            plaintext = create_token(s, name, project, admin)
            s.commit()
        return plaintext

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=30)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    data = tmp_path_factory.mktemp("dashboard")
    port = _free_port()
    settings = Settings(database_url=f"sqlite:///{data}/densenas.db", executor="none",
                        data_dir=data, host="127.0.0.1", port=port,
                        public_url=f"http://127.0.0.1:{port}", sse_poll_s=0.1, sse_ping_s=5,
                        env="dev")
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="uvicorn-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the app did not start", pytrace=False)
        time.sleep(0.05)
    yield LiveServer(f"http://127.0.0.1:{port}", app)
    srv.should_exit = True
    thread.join(timeout=15)


# -- playing the worker ----------------------------------------------------------------------

@dataclass
class Worker:
    """Drives one job through the worker routes with its own per-job token."""

    server: LiveServer
    job_id: int
    token: str
    seq: int = 0
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = self.server.client(self.token)

    def events(self, *events: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        batch = []
        for type_, data in events:
            self.seq += 1
            batch.append({"seq": self.seq, "type": type_, "data": data})
        r = self.http.post(f"/v1/jobs/{self.job_id}/events", json={"events": batch})
        r.raise_for_status()
        return r.json()

    def complete(self, outcome: str = "succeeded", *, result: dict | None = None,
                 error: str | None = None) -> dict[str, Any]:
        r = self.http.post(f"/v1/jobs/{self.job_id}/complete",
                           json={"outcome": outcome, "result": result, "error": error})
        r.raise_for_status()
        return r.json()


def start_job(server: LiveServer, job_id: int) -> Worker:
    """Claim queued jobs as the dispatcher would, until ``job_id`` is running → its worker."""
    from service import jobs

    with server.session() as s:
        claimed = jobs.claim(s, "browser-tests", 100)
    tokens = {job.id: tok for job, tok in claimed}
    if job_id not in tokens:
        raise AssertionError(f"job {job_id} was not claimable (claimed {sorted(tokens)})")
    return Worker(server, job_id, tokens[job_id])


# -- search data shaped like densenas_core's -------------------------------------------------

def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


class FakeSearch:
    """α/β logits that sharpen epoch by epoch, exported in SuperNet.export_probs's shape, with
    the architecture the core derives from them (densenas_core.derive)."""

    def __init__(self, space: str = "mbv2-small", seed: int = 0) -> None:
        from densenas_core._graph import space_graph
        from densenas_core.spaces import get_space

        self.space = get_space(space)
        self.g = space_graph(self.space)
        rnd = random.Random(seed)
        self.beta_dir = [[rnd.gauss(0, 1) for _ in self.space.out_paths[i]]
                         for i in range(self.g.beta_rows)]
        self.align_dir = [[rnd.gauss(0, 1) for _ in self.space.align_ops]
                          for _ in self.g.align_paths]
        self.layer_dir = [[rnd.gauss(0, 1) for _ in self.space.layer_ops]
                          for _ in self.g.layer_block]

    def logits(self, epoch: int) -> tuple[dict, list[list[float]]]:
        k = 0.6 * (epoch + 1)
        scale = lambda rows: [[k * v for v in r] for r in rows]  # noqa: E731
        return ({"align": scale(self.align_dir), "layers": scale(self.layer_dir)},
                scale(self.beta_dir))

    def arch_params(self, epoch: int) -> dict[str, Any]:
        """SearchResult.arch_params: α as alignment rows then layer rows, β ragged (logits)."""
        alpha, beta = self.logits(epoch)
        return {"alpha": alpha["align"] + alpha["layers"], "beta": beta}

    def probs(self, epoch: int) -> dict[str, Any]:
        alpha, beta = self.logits(epoch)
        g, s = self.g, self.space
        return {
            "space": s.name, "temperature": 1.0,
            "alpha": {
                "align": [{"src": g.path_src[k], "dst": g.path_dst[k], "ops": list(s.align_ops),
                           "probs": _softmax(alpha["align"][r])}
                          for r, k in enumerate(g.align_paths)],
                "layers": [{"block": b, "layer": i, "ops": list(s.layer_ops),
                            "probs": _softmax(alpha["layers"][r])}
                           for r, (b, i) in enumerate(zip(g.layer_block, g.layer_pos))],
            },
            "beta": [{"block": i, "dst": [p.dst for p in s.out_paths[i]],
                      "probs": _softmax(beta[i])} for i in range(g.beta_rows)],
        }

    def architecture(self, epoch: int) -> dict[str, Any]:
        from densenas_core.derive import derive_architecture

        alpha, beta = self.logits(epoch)
        return derive_architecture(self.space, alpha, beta, input_size=32, num_classes=10,
                                   in_channels=1, name=f"fake-e{epoch}")

    def arch_event(self, epoch: int) -> tuple[str, dict[str, Any]]:
        return ("arch", {"epoch": epoch, "probs": self.probs(epoch),
                         "architecture": self.architecture(epoch)})


def step_event(global_step: int, epoch: int, phase: str = "weights") -> tuple[str, dict]:
    loss = 2.3 * math.exp(-global_step / 40) + 0.2
    return ("step", {"phase": phase, "epoch": epoch, "step": global_step % 10, "loss": loss,
                     "acc": 1 - loss / 2.6, "lr": 0.1, "expected_cost": 5e6 - 1e4 * global_step,
                     "global_step": global_step})


def epoch_event(epoch: int) -> tuple[str, dict]:
    return ("epoch", {"epoch": epoch, "phase": "search" if epoch else "warmup",
                      "train_loss": 2.0 / (epoch + 1), "train_acc": 0.5 + 0.1 * epoch,
                      "val_loss": 2.2 / (epoch + 1), "val_acc": 0.45 + 0.1 * epoch,
                      "expected_cost": 5e6 - 2e5 * epoch, "derived_cost": 4.8e6 - 2e5 * epoch,
                      "cost_unit": "mult-adds", "steps": 10, "lr": 0.1})


def fake_latency_table(space: str = "mbv2-small", device_name: str = "test-cpu") -> dict:
    """A LatencyTable document covering every op of ``space`` at 32 px, 1 channel in, 10
    classes, with made-up but shape-dependent timings (no profiling in a browser test)."""
    from densenas_core.latency import LatencyStat, LatencyTable, OpKey, space_op_signatures
    from densenas_core.spaces import get_space

    entries = {}
    for sig in space_op_signatures(get_space(space), 32, in_channels=1, num_classes=10):
        k = int(sig.op.split("_")[1][1:]) if sig.op.startswith("mb_") else 3
        ms = 0.02 + 2e-8 * sig.c_in * sig.c_out * sig.h * sig.w * k * k / sig.stride ** 2
        entries[OpKey(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)] = \
            LatencyStat.from_samples([ms * 0.95, ms, ms * 1.1])
    return LatencyTable(device_name=device_name, device_kind="cpu", batch=1, input_size=32,
                        spaces=[space], entries=entries).to_dict()


# -- the browser -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("DENSENAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _missing(f"Chromium ({path})")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (Python)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):
    """A fresh context per test; console errors and uncaught exceptions fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
          if m.type == "error" else None)
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()
    allowed = getattr(request.node, "allowed_console_errors", ())
    real = [e for e in errors if not any(a in e for a in allowed)]
    assert not real, "browser errors:\n" + "\n".join(real)


def login(page, server: LiveServer, token: str, path: str = "/") -> None:
    page.goto(f"{server.url}/login?next={path}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}{path}")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    out = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(out), full_page=True)
    return out

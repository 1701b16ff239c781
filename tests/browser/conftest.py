"""Browser tests: the real app on uvicorn (SQLite, executor "none") driven by headless Chromium.

Seeding goes through the REST API where a user would act, and through the worker routes with
the per-job token that ``service.jobs.claim`` mints (what the dispatcher does), so the pages see
exactly the data a real run produces. No executor runs: a test plays the worker itself
(:class:`support.Worker`). Under CI=true a missing Chromium or Playwright fails instead of
skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import LiveServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available", pytrace=False)
    pytest.skip(f"{what} not available")


# -- the live server -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from service.settings import Settings

    data = tmp_path_factory.mktemp("dashboard")

    def settings(url: str) -> Settings:
        port = int(url.rsplit(":", 1)[1])
        return Settings(
            database_url=f"sqlite:///{data}/densenas.db",
            executor="none",
            data_dir=data,
            host="127.0.0.1",
            port=port,
            public_url=url,
            sse_poll_s=0.1,
            sse_ping_s=5,
            env="dev",
        )

    with LiveServer(settings) as live:
        yield live


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
    pg.on(
        "console",
        lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()
    allowed = getattr(request.node, "allowed_console_errors", ())
    real = [e for e in errors if not any(a in e for a in allowed)]
    assert not real, "browser errors:\n" + "\n".join(real)

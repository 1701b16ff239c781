"""``service.server.serve`` as the CLI runs it: a real process that starts, migrates, writes the
bootstrap token, serves, and on SIGTERM ends promptly even with an SSE stream open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.net import free_port
from tests.support.waiting import wait_for

SCRIPT = """
import sys
from service.server import serve
from service.settings import Settings
serve(Settings(database_url=sys.argv[1], data_dir=sys.argv[2], port=int(sys.argv[3]),
               executor="none", log_level="info"))
"""


@pytest.mark.slow  # a server subprocess from start-up to shutdown: 4-5 s
def test_serve_starts_and_stops_with_an_open_stream(tmp_path):
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT,
            f"sqlite:///{tmp_path / 's.db'}",
            str(tmp_path / "data"),
            str(port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, "server exited"
                return False

        wait_for(healthy, 90, 0.2, "the server to answer /healthz")
        token = (tmp_path / "data" / "admin_token").read_text().strip()
        h = {"Authorization": f"Bearer {token}"}
        jid = httpx.post(f"{url}/v1/jobs", headers=h, json={"kind": "search"}).json()["id"]
        opened = threading.Event()

        def follow() -> None:
            try:
                with httpx.stream("GET", f"{url}/v1/jobs/{jid}/events", headers=h, timeout=60) as r:
                    for _ in r.iter_lines():
                        opened.set()
            except httpx.HTTPError:
                pass

        threading.Thread(target=follow, daemon=True).start()
        assert opened.wait(30)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        # uvicorn re-raises the captured SIGTERM after a graceful shutdown
        assert proc.returncode in (0, -signal.SIGTERM), err
        assert "Application shutdown complete" in err, err
        assert time.monotonic() - started < 15  # the open stream did not hold the shutdown
        assert token not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

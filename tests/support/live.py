"""The control plane in the test process: ``create_app(settings, executor)`` served by uvicorn
in a thread on a pre-bound port of 127.0.0.1 — the service unit tests, the inline-executor and
PostgreSQL integration tests and the browser tests all run it this way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn

from service.app import create_app
from service.settings import Settings

from .net import bound_socket


class LiveServer:
    """``settings_factory(url)`` gets the server's URL (to use as ``public_url``) once its port
    is bound. A context manager: entering waits for uvicorn's start-up, leaving stops it."""

    def __init__(
        self, settings_factory: Callable[[str], Settings], executor: Any = None, **app_kw: Any
    ) -> None:
        self.sock = bound_socket()
        host, port = self.sock.getsockname()
        self.port = port
        self.url = f"http://{host}:{port}"
        self.settings = settings_factory(self.url)
        self.app = create_app(self.settings, executor, **app_kw)
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
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

    def session(self):
        """A session of the app's own database."""
        return self.app.state.session_factory()

    def admin_token(self) -> str:
        return self.settings.admin_token_path.read_text().strip()

    def token(self, name: str, project: str = "default", admin: bool = False) -> str:
        """A fresh API token (plaintext), minted straight into the app's database."""
        from service.tokens import create_token

        with self.session() as s:
            plaintext = create_token(s, name, project, admin)
            s.commit()
        return plaintext

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

"""`densenas serve --host H --port P`: the URL Ray workers call back on follows the bind address
unless DENSENAS_PUBLIC_URL says otherwise (before, workers posted to the default :8000 and a
server on another port saw no events)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

import service.server
from service.cli import app
from service.settings import Settings

runner = CliRunner()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings `serve` would run the server with (nothing is started)."""
    for key in ("DENSENAS_PUBLIC_URL", "DENSENAS_HOST", "DENSENAS_PORT"):
        monkeypatch.delenv(key, raising=False)
    seen: list[Settings] = []
    monkeypatch.setattr(service.server, "serve", seen.append)
    return seen


def test_serve_port_and_host_set_the_worker_callback_url(served: list[Settings]) -> None:
    r = runner.invoke(app, ["serve", "--host", "127.0.0.5", "--port", "8123", "--executor", "none"])
    assert r.exit_code == 0, r.output
    (settings,) = served
    assert (settings.host, settings.port) == ("127.0.0.5", 8123)
    assert settings.public_url == "http://127.0.0.5:8123"


def test_serve_port_alone_keeps_the_default_host(served: list[Settings]) -> None:
    r = runner.invoke(app, ["serve", "--port", "9010", "--executor", "none"])
    assert r.exit_code == 0, r.output
    assert served[0].public_url == "http://127.0.0.1:9010"


def test_public_url_from_the_environment_wins(served: list[Settings]) -> None:
    r = runner.invoke(
        app,
        ["serve", "--host", "0.0.0.0", "--port", "8000", "--executor", "none"],
        env={"DENSENAS_PUBLIC_URL": "http://api:8000"},
    )
    assert r.exit_code == 0, r.output
    assert served[0].public_url == "http://api:8000"


def test_wildcard_and_ipv6_bind_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DENSENAS_PUBLIC_URL", "DENSENAS_HOST", "DENSENAS_PORT"):
        monkeypatch.delenv(key, raising=False)
    # 0.0.0.0 is where the server listens, not where anyone can call it: the host name is
    assert Settings(host="0.0.0.0", port=8000).public_url == f"http://{socket.gethostname()}:8000"
    assert Settings(host="::1", port=8001).public_url == "http://[::1]:8001"
    assert Settings().public_url == "http://127.0.0.1:8000"  # the documented default
    monkeypatch.setenv("DENSENAS_PORT", "8002")
    assert Settings().public_url == "http://127.0.0.1:8002"

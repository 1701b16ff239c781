"""Read commands retry while the server is unreachable (about 8 s by default): the CLI says so
on stderr at the first failed attempt, once, and still ends with the final error."""

from __future__ import annotations

import click
import httpx
import pytest
import typer

from service.cli.common import RETRIES_ENV, CliError, client_from, unreachable_notice
from service.client import DenseNASClient


def refusing(calls: list[str]) -> httpx.MockTransport:
    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        raise httpx.ConnectError("Connection refused", request=req)

    return httpx.MockTransport(handler)


def test_client_calls_on_retry_before_each_wait() -> None:
    calls: list[str] = []
    seen: list[tuple[str, int]] = []
    c = DenseNASClient(
        "http://srv:8000",
        transport=refusing(calls),
        retries=3,
        sleep=lambda s: None,
        on_retry=lambda e, n: seen.append((type(e).__name__, n)),
    )
    with pytest.raises(httpx.ConnectError):
        c.get_job(1)
    assert len(calls) == 4
    assert seen == [("ConnectError", 1), ("ConnectError", 2), ("ConnectError", 3)]


def test_notice_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    c = DenseNASClient(
        "http://srv:8000",
        transport=refusing([]),
        retries=4,
        sleep=lambda s: None,
        on_retry=unreachable_notice(),
    )
    with pytest.raises(httpx.ConnectError):
        c.list_jobs()
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "server unreachable at http://srv:8000, retrying…\n"


def test_notice_ignores_a_busy_server(capsys: pytest.CaptureFixture[str]) -> None:
    notice = unreachable_notice()
    notice(RuntimeError("503"), 1)
    assert capsys.readouterr().err == ""


def test_no_notice_without_retries(capsys: pytest.CaptureFixture[str]) -> None:
    c = DenseNASClient("http://srv:8000", transport=refusing([]), retries=0)
    c.on_retry = unreachable_notice()
    with pytest.raises(httpx.ConnectError):
        c.get_job(1)
    assert capsys.readouterr().err == ""


def ctx() -> typer.Context:
    ctx = typer.Context(click.Command("densenas"))
    ctx.obj = {"url": "http://srv:8000", "token": "t", "timeout": 5.0}
    return ctx


def test_retry_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETRIES_ENV, raising=False)
    c = client_from(ctx())
    assert c.retries == DenseNASClient("http://x").retries and c.on_retry is not None
    monkeypatch.setenv(RETRIES_ENV, "0")
    assert client_from(ctx()).retries == 0
    monkeypatch.setenv(RETRIES_ENV, "many")
    with pytest.raises(CliError, match=RETRIES_ENV):
        client_from(ctx())
    monkeypatch.setenv(RETRIES_ENV, "-1")
    with pytest.raises(CliError, match="≥ 0"):
        client_from(ctx())

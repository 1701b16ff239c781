"""Shared plumbing of the ``densenas`` CLI: the typer apps, the consoles, the global options
and the API client they configure, and :func:`cli_errors` (every failure one red line, exit 1).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from service.client import ApiError, DenseNASClient

app = typer.Typer(
    name="densenas",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="DenseNAS job orchestration: search, retrain and profile on Ray.",
)
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
submit_app = typer.Typer(no_args_is_help=True, help="Submit a search, retrain or profile job.")
arch_app = typer.Typer(no_args_is_help=True, help="Derived architectures.")
space_app = typer.Typer(no_args_is_help=True, help="Search spaces (local, no server needed).")
app.add_typer(token_app, name="token")
app.add_typer(submit_app, name="submit")
app.add_typer(arch_app, name="arch")
app.add_typer(space_app, name="space")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # errors: no hard wraps

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


# -- plumbing --------------------------------------------------------------------------------


class CliError(Exception):
    """A user-facing failure: printed in red, exit code 1."""


#: Errors of the local paths whose message is meant for a person (SpaceError, ArchError and
#: pydantic's ValidationError are ValueErrors; a missing file is an OSError).
_LOCAL_ERRORS: tuple[type[BaseException], ...] = (CliError, OSError, ValueError)


def cli_errors(fn: F) -> F:
    """Turn every expected failure into one red line and exit code 1 (no tracebacks)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except ApiError as e:
            err_console.print(f"[bold red]Error:[/] [red]{escape(e.message)}[/]")
            items = [_format_field_error(x) for x in e.errors]
            if items != [e.detail]:  # the detail already is the only field error
                for item in items[:20]:
                    err_console.print(f"  [red]- {escape(item)}[/]")
            raise typer.Exit(1) from None
        except httpx.ConnectError as e:
            err_console.print(
                f"[bold red]Error:[/] [red]cannot reach {escape(_server_of(e))} "
                f"({escape(str(e))}); is `densenas serve` running? "
                "Set DENSENAS_URL to point elsewhere.[/]"
            )
            raise typer.Exit(1) from None
        except httpx.HTTPError as e:
            err_console.print(
                f"[bold red]Error:[/] [red]HTTP: {escape(str(e) or type(e).__name__)}[/]"
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except _LOCAL_ERRORS as e:
            msg = str(e) or type(e).__name__
            if isinstance(e, FileNotFoundError) and e.filename:
                msg = f"no such file: {e.filename}"
            err_console.print(f"[bold red]Error:[/] [red]{escape(msg)}[/]")
            raise typer.Exit(1) from None
        except Exception as e:  # a bug: still one line, the traceback only on request
            if os.environ.get("DENSENAS_DEBUG"):
                raise
            err_console.print(
                f"[bold red]Error:[/] [red]{type(e).__name__}: {escape(str(e))}[/]"
                " [dim](DENSENAS_DEBUG=1 shows the traceback)[/]"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _server_of(e: httpx.ConnectError) -> str:
    """``scheme://host:port`` of the request ``e`` failed on (``the server`` if unknown)."""
    try:
        url = e.request.url
    except RuntimeError:  # an error raised without its request
        return "the server"
    return f"{url.scheme}://{url.host}:{url.port}"


def _format_field_error(item: Any) -> str:
    if isinstance(item, Mapping):
        loc = item.get("field") or item.get("loc") or item.get("pointer")
        if isinstance(loc, (list, tuple)):
            loc = ".".join(str(x) for x in loc)
        msg = item.get("message") or item.get("msg") or json.dumps(item)
        return f"{loc}: {msg}" if loc else str(msg)
    return str(item)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_or(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """``--json``: ``data`` as JSON; otherwise ``render(data)`` for a person."""
    if as_json:
        print_json(data)
    else:
        render(data)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="DENSENAS_URL",
            show_envvar=True,
            help="Control plane URL (default http://127.0.0.1:8000 or the config file).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DENSENAS_TOKEN",
            show_envvar=False,
            help="API token (default: DENSENAS_TOKEN, ~/.config/densenas/config.toml, "
            "then the local server's admin token file).",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 30.0,
) -> None:
    ctx.obj = {"url": url, "token": token, "timeout": timeout}


#: How many times a request that is safe to repeat is retried while the server is unreachable
#: or busy (the client's 0.5 s doubling waits: 4 is about 8 s); unset: the client's default.
RETRIES_ENV = "DENSENAS_RETRIES"


def unreachable_notice() -> Callable[[BaseException, int], None]:
    """The client's ``on_retry`` hook for the CLI: one line on stderr the first time a request
    cannot reach the server, so the retries (seconds) are not a silent hang; the final error
    still comes from :func:`cli_errors` once they are spent."""
    shown = False

    def notice(error: BaseException, attempt: int) -> None:
        nonlocal shown
        if isinstance(error, httpx.ConnectError) and not shown:
            shown = True
            err_console.print(
                f"[yellow]server unreachable at {escape(_server_of(error))}, retrying…[/]"
            )

    return notice


def _retries() -> dict[str, int]:
    value = os.environ.get(RETRIES_ENV, "").strip()
    if not value:
        return {}
    try:
        retries = int(value)
    except ValueError:
        raise CliError(f"{RETRIES_ENV}: expected a whole number, got {value!r}") from None
    if retries < 0:
        raise CliError(f"{RETRIES_ENV}: expected a number ≥ 0, got {retries}")
    return {"retries": retries}


def client_from(ctx: typer.Context) -> DenseNASClient:
    obj = ctx.find_root().obj or {}
    return DenseNASClient.from_env(
        url=obj.get("url"),
        token=obj.get("token"),
        timeout=obj.get("timeout", 30.0),
        on_retry=unreachable_notice(),
        **_retries(),
    )


def settings_with(**overrides: Any) -> Any:
    from service.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def redact_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url

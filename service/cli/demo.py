"""``densenas demo``: the whole system on one machine (control plane in-process, a real
search through the REST API, watched live)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from service.client import DenseNASClient

from .common import (
    CliError,
    app,
    cli_errors,
    console,
    err_console,
    print_json,
    redact_url,
    settings_with,
)
from .submit import build_search_spec
from .watch import JobWatcher, finish_watch, produced_arch_ids


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def run_control_plane(settings: Any, *, startup_timeout: float = 120.0) -> Iterator[str]:
    """Serve ``create_app(settings)`` with uvicorn in a background thread; yields its URL."""
    import uvicorn

    from service.app import create_app
    from service.server import Server

    fastapi_app = create_app(settings)
    config = uvicorn.Config(
        fastapi_app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = Server(config, fastapi_app)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.run()
        except BaseException as e:  # noqa: BLE001 - surfaced below, not lost with the thread
            errors.append(e)

    thread = threading.Thread(target=target, name="densenas-control-plane", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise CliError(
                "the control plane failed to start"
                + (f": {errors[0]}" if errors else " (see the log above)")
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise CliError("the control plane did not start in time")
        time.sleep(0.05)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        fastapi_app.state.stopping.set()  # ends open SSE streams now
        server.should_exit = True
        thread.join(timeout=60)


def _bootstrap_token(settings: Any) -> str:
    """The admin token the server bootstrapped (minted now on a fresh database).

    A database that already has tokens but whose token file is gone gets a new admin token
    named ``demo`` instead: the demo owns its database.
    """
    from service.tokens import ensure_admin_token

    ensure_admin_token(settings)
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    path = Path(settings.admin_token_path)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    from service.db import make_engine, make_session_factory, session_scope
    from service.tokens import create_token

    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return create_token(session, "demo", "default", True)
    finally:
        engine.dispose()


@app.command()
@cli_errors
def demo(
    space: Annotated[str, typer.Option(help="Search space preset or file.")] = "mbv2-small",
    dataset: Annotated[str, typer.Option(help="fashion-mnist | synthetic | ...")] = "fashion-mnist",
    limit_train: Annotated[int, typer.Option(help="Training images used.")] = 6000,
    limit_val: Annotated[int, typer.Option(help="Validation images used.")] = 1000,
    epochs: Annotated[int, typer.Option()] = 3,
    warmup_epochs: Annotated[int, typer.Option()] = 1,
    batch_size: Annotated[int, typer.Option()] = 64,
    seed: Annotated[int, typer.Option()] = 0,
    executor: Annotated[
        str, typer.Option(help="ray (local Ray started in-process) | inline (a thread, no Ray)")
    ] = "ray",
    database_url: Annotated[
        str | None, typer.Option(help="Default: the SQLite file ./.densenas/demo.db.")
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            help="The demo server's admin token and checkpoints (kept apart from the "
            "`densenas serve` default ./.densenas)."
        ),
    ] = Path(".densenas/demo"),
    port: Annotated[int | None, typer.Option(help="Default: a free port.")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Keep Ray's start-up log lines.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final job (and architecture) as JSON.")
    ] = False,
) -> None:
    """Start the control plane in-process, run a real search through the REST API, watch it
    live and print the derived architecture (exit 0 only if the search succeeded)."""
    # The embedded Ray's loopback setting is made by the executor that starts it (not here: with
    # RAY_ADDRESS set the demo runs on that cluster, where it would be wrong).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not verbose:
        _quiet_ray_startup()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or "sqlite:///.densenas/demo.db"
    host = "127.0.0.1"
    port = port or free_port(host)
    settings = settings_with(
        database_url=url,
        host=host,
        port=port,
        executor=executor,
        data_dir=data_dir,
        public_url=f"http://{host}:{port}",
    )
    spec = build_search_spec(
        space=space,
        dataset=dataset,
        limit_train=limit_train,
        limit_val=limit_val,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        batch_size=batch_size,
        seed=seed,
    )
    say = err_console.print if as_json else console.print
    say(
        f"[bold]DenseNAS demo[/]: control plane on http://{host}:{port} "
        f"(database {escape(redact_url(url))}, executor {executor})"
    )
    with run_control_plane(settings) as base_url:
        token = _bootstrap_token(settings)
        with DenseNASClient(base_url, token, timeout=60.0) as c:
            job_doc = c.create_job("search", spec)
            say(
                f"submitted search job [bold]{job_doc['id']}[/]: {space} on {dataset} "
                f"({limit_train} train / {limit_val} val images, {epochs} epochs, "
                f"{warmup_epochs} warm-up) — dashboard: {base_url}/"
            )
            if as_json:
                final = _wait_quietly(c, int(job_doc["id"]))
                out: dict[str, Any] = {"job": final}
                ids = produced_arch_ids(final)
                if ids:
                    out["architecture"] = c.get_architecture(ids[0])
                print_json(out)
                if final.get("status") != "succeeded":
                    raise typer.Exit(1)
                return
            final = JobWatcher(c, job_doc).run()
            finish_watch(c, final, as_json=False)
    console.print(
        f"[green]demo finished.[/] The job and its architecture stay in "
        f"{escape(redact_url(url))}; browse them with\n"
        f"  DENSENAS_DATABASE_URL={escape(url)} DENSENAS_DATA_DIR={escape(str(data_dir))}"
        " densenas serve"
    )


def _quiet_ray_startup() -> None:
    """Ray's in-process start-up warnings (no SIGTERM handler off the main thread, token auth
    on, "Started a local Ray instance") would break up the progress view; Ray resets the level
    of its root ``ray`` logger on import, but not of these children."""
    import logging

    for name in ("ray._private.worker", "ray._private.authentication"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _wait_quietly(client: DenseNASClient, job_id: int) -> dict[str, Any]:
    for ev in client.stream_events(job_id):
        if JobWatcher._is_terminal_event(ev):
            break
    return client.get_job(job_id)

"""Commands on the server's side: ``serve`` and ``migrate`` and ``token create`` act on the
configured database directly (they are how a server gets started and its first tokens minted);
``token list``/``token revoke`` and ``me`` go through the API."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Annotated

import typer
from rich.markup import escape

from .common import (
    JsonOpt,
    app,
    cli_errors,
    client_from,
    console,
    err_console,
    print_json,
    print_json_or,
    redact_url,
    settings_with,
    token_app,
)
from .format import human_age, new_table, print_facts


@app.command()
@cli_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    executor: Annotated[
        str | None, typer.Option(help="ray | inline | none (default: DENSENAS_EXECUTOR or ray).")
    ] = None,
) -> None:
    """Run the control plane (REST API, SSE, dashboard, dispatcher)."""
    from service.server import serve as run_server

    run_server(settings_with(host=host, port=port, executor=executor))


@app.command()
@cli_errors
def migrate() -> None:
    """Upgrade the configured database to the latest schema (idempotent)."""
    from service.db import run_migrations

    settings = settings_with()
    run_migrations(settings.database_url)
    err_console.print(f"database at head: {redact_url(settings.database_url)}")


@token_app.command("create")
@cli_errors
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who or what the token is for.")] = "cli",
    project: Annotated[str, typer.Option(help="Project the token acts in.")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="Admin rights.")] = False,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Mint through the API (needs an admin token) instead of the local database.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token directly in the configured database (runs migrations first).

    Prints only the token (shown once; the database keeps a hash).
    """
    if remote:
        with client_from(ctx) as c:
            created = c.create_token(name, project=project, admin=admin)
        if as_json:
            print_json(created)
        else:
            sys.stdout.write(created["token"] + "\n")
        return
    from service.db import make_engine, make_session_factory, run_migrations, session_scope
    from service.tokens import create_token_row

    settings = settings_with()
    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            row, plaintext = create_token_row(session, name, project, admin)
            info = {
                "id": row.id,
                "name": name,
                "project": project,
                "admin": admin,
                "token": plaintext,
            }
    finally:
        engine.dispose()
    if as_json:
        print_json(info)
    else:
        sys.stdout.write(plaintext + "\n")


@token_app.command("list")
@cli_errors
def token_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List tokens (admin; via the API)."""
    with client_from(ctx) as c:
        data = c.list_tokens()
    rows = data.get("data", data) if isinstance(data, Mapping) else data
    if as_json:
        print_json(data)
        return
    table = new_table(("id", "name", "project", "admin", "job", "created", "revoked"))
    for t in rows or []:
        table.add_row(
            str(t.get("id")),
            escape(str(t.get("name"))),
            escape(str(t.get("project"))),
            "yes" if t.get("is_admin", t.get("admin")) else "",
            str(t["job_id"]) if t.get("job_id") is not None else "",
            human_age(t.get("created_at")),
            f"{human_age(t['revoked_at'])} ago" if t.get("revoked_at") else "",
        )
    console.print(table)


@token_app.command("revoke")
@cli_errors
def token_revoke(ctx: typer.Context, token_id: int) -> None:
    """Delete a token (admin; via the API)."""
    with client_from(ctx) as c:
        c.delete_token(token_id)
    err_console.print(f"token {token_id} revoked")


@app.command()
@cli_errors
def me(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Who the configured token is."""
    with client_from(ctx) as c:
        data = c.me()
    print_json_or(data, as_json, print_facts)

"""Listing, following, cancelling and retrying jobs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import JsonOpt, app, cli_errors, client_from, console, print_json, print_json_or
from .format import job_table, print_job, status_text
from .jobinfo import optional, print_placement
from .watch import JobWatcher, finish_watch

WideOpt = Annotated[
    bool, typer.Option("--wide", help="More columns (tables fold long cells, never cut them).")
]


@app.command()
@cli_errors
def jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="search|retrain|profile")] = None,
    project: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", help="Only jobs with this tag (repeat: jobs with all of them)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """List jobs, newest first; --wide adds the attempt, start, finish and heartbeat times."""
    with client_from(ctx) as c:
        page = c.list_jobs(
            status=status, kind=kind, project=project, limit=limit, cursor=cursor, tags=tag
        )
    if as_json:
        print_json(page)
        return
    data = page.get("data", [])
    if not data:
        console.print("no jobs")
    else:
        console.print(job_table(data, wide=wide))
    if page.get("next_cursor"):
        console.print(f"[dim]more: densenas jobs --cursor {page['next_cursor']}[/]")


@app.command()
@cli_errors
def job(ctx: typer.Context, job_id: int, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Details of one job, where it runs (its processes, or the ranks it ran on) and its
    checkpoints; --json prints the job document only."""
    with client_from(ctx) as c:
        data = c.get_job(job_id)
        if as_json:
            print_json(data)
            return
        resources = optional(c.job_resources, job_id)
        checkpoints = optional(c.job_checkpoints, job_id)
    print_job(data)
    print_placement(resources, checkpoints, wide)


@app.command()
@cli_errors
def watch(
    ctx: typer.Context,
    job_id: int,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print events as JSON lines, then the final job.")
    ] = False,
) -> None:
    """Follow a job live until it ends; exit 1 if it failed or was cancelled."""
    with client_from(ctx) as c:
        job_doc = c.get_job(job_id)
        final = JobWatcher(c, job_doc, json_lines=as_json).run()
        finish_watch(c, final, as_json)


def _transition(job_id: int, data: dict[str, Any], as_json: bool, note: str) -> None:
    """The answer to cancel / retry: the job as JSON, or its new status and ``note``."""
    print_json_or(
        data,
        as_json,
        lambda d: console.print(f"job {job_id}: {status_text(d.get('status'))}{note}"),
    )


@app.command()
@cli_errors
def cancel(ctx: typer.Context, job_id: int, as_json: JsonOpt = False) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    with client_from(ctx) as c:
        data = c.cancel_job(job_id)
    pending = data.get("cancel_requested") and data.get("status") != "cancelled"
    _transition(job_id, data, as_json, " (cancel requested)" if pending else "")


@app.command()
@cli_errors
def retry(ctx: typer.Context, job_id: int, as_json: JsonOpt = False) -> None:
    """Queue a failed or cancelled job again (resumes from its last checkpoint)."""
    with client_from(ctx) as c:
        data = c.retry_job(job_id)
    _transition(
        job_id, data, as_json, f" (attempt {data.get('attempt')}/{data.get('max_attempts')})"
    )

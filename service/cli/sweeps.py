"""Sweeps from the command line: ``densenas submit sweep`` (every ``submit search`` flag for
the base search, ``--grid FIELD=V1,V2`` for what varies) and ``densenas trials <sweep>`` (the
family's trials with their config, status, accuracy and cost, the Pareto front marked)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from .common import CliError, JsonOpt, app, cli_errors, client_from, console, print_json_or
from .format import fmt_acc, fmt_millions, new_table, status_text
from .submit import build_search_spec, put_given, submit_command


def _value(text: str) -> Any:
    """A grid value as typed: JSON where it parses (numbers, true/false/null, objects), else
    the text itself (``--grid space=mbv2-small,resnet-small``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["cost.target=12e6,20e6", "seed=0,1"]`` → ``{"cost.target": [12e6, 20e6], "seed":
    [0, 1]}`` (a key given twice gets both lists' values)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise CliError(
                f"--grid {item!r}: expected FIELD=V1,V2,... (e.g. cost.target=12e6,20e6)"
            )
        grid.setdefault(key.strip(), []).extend(_value(v.strip()) for v in values.split(","))
    return grid


def _sweep_options(
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help=(
                "FIELD=V1,V2,... : a search-spec field (dotted for nested ones, e.g. "
                "cost.target, cost.lam, seed, a_lr) and its values; repeat for more fields "
                "(every combination is one trial). Required unless --spec gives a grid."
            ),
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Trials at once (server default 2).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="asha: stop trials whose val_acc trails (default: none).")
    ] = None,
    grace_epochs: Annotated[
        int | None, typer.Option(help="asha: epochs every trial runs first (default 1).")
    ] = None,
) -> None:
    """The sweep's own flags (declared once, here)."""


_OWN = inspect.signature(_sweep_options, eval_str=True).parameters


def build_sweep_spec(**kwargs: Any) -> dict[str, Any]:
    own = {name: kwargs.pop(name) for name in _OWN}
    spec: dict[str, Any] = {"search": build_search_spec(**kwargs)}
    if own["grid"]:
        spec["grid"] = parse_grid(own["grid"])
    put_given(spec, "max_concurrent", own["max_concurrent"])
    put_given(spec, "scheduler", own["scheduler"])
    put_given(spec, "grace_epochs", own["grace_epochs"])
    return spec


build_sweep_spec.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [*_OWN.values(), *inspect.signature(build_search_spec, eval_str=True).parameters.values()]
)
submit_command(
    "sweep",
    doc=(
        "Submit a sweep: the search these flags describe, once per combination of the --grid "
        "values, run as one Ray Tune job (each trial a search job with its own page)."
    ),
)(build_sweep_spec)


def trials_table(page: Mapping[str, Any]) -> Any:
    front = set(page.get("pareto_front") or [])
    rows = page.get("data") or []
    keys = list(dict.fromkeys(k for r in rows for k in (r.get("config") or {})))
    table = new_table(
        ("trial", "job", *keys, "status", "val_acc", "mult-adds", "arch", "front"),
        right=("trial", "job", "val_acc", "mult-adds", "arch"),
    )
    for r in rows:
        config = r.get("config") or {}
        table.add_row(
            str(r.get("trial")),
            str(r.get("job_id")),
            *(json.dumps(config.get(k)) for k in keys),
            status_text(r.get("status")),
            fmt_acc(r.get("val_acc")),
            fmt_millions(r.get("mult_adds")),
            str(r.get("architecture_id") or "—"),
            "★" if r.get("job_id") in front else "",
        )
    return table


@app.command("trials")
@cli_errors
def trials(
    ctx: typer.Context,
    sweep_id: Annotated[int, typer.Argument(help="The sweep job's id.")],
    as_json: JsonOpt = False,
) -> None:
    """A sweep's trials: config, status, val_acc, mult-adds, architecture; ★ the Pareto front."""
    with client_from(ctx) as c:
        page = c.sweep_trials(sweep_id)
    print_json_or(page, as_json, lambda p: console.print(trials_table(p)))

"""Where a job runs and what it uses, and its checkpoints, as ``densenas job`` prints them
(``GET /v1/jobs/{id}/resources`` and ``/checkpoints``). Tables fold long cells, never elide."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table

from service.client import ApiError

from .common import console
from .format import fmt_bytes, human_age, new_table


def _text(v: Any) -> str:
    return "-" if v is None or v == "" else escape(str(v))


def _node(p: Mapping[str, Any]) -> str:
    host, ip = p.get("hostname"), p.get("node_ip")
    if host and ip:
        return f"{escape(str(host))} ({escape(str(ip))})"
    return _text(host or ip or p.get("node_id"))


def workers_table(resources: Mapping[str, Any], wide: bool = False) -> Table | None:
    """The live processes of a running job; else the ranks its result recorded; None when
    there are neither. ``wide`` adds the Ray node and actor ids, threads and how usage was
    measured."""
    live = resources.get("processes") or []
    columns = ["role", "node", "pid", "state", "device", "cpu", "rss", "gpu mem"]
    if wide:
        columns += ["node id", "actor id", "threads", "measured by"]
    table = new_table(columns, right=("pid", "cpu", "rss", "gpu mem", "threads"))
    if live:
        for p in live:
            cpu = p.get("cpu_percent")
            row = [
                _text(p.get("role")),
                _node(p),
                _text(p.get("pid")),
                _text(p.get("state")),
                _text(p.get("device")),
                "-" if cpu is None else f"{cpu:.1f} %",
                "-" if p.get("rss_bytes") is None else fmt_bytes(p["rss_bytes"]),
                "-" if p.get("gpu_memory_bytes") is None else fmt_bytes(p["gpu_memory_bytes"]),
            ]
            if wide:
                row += [
                    _text(p.get("node_id")),
                    _text(p.get("actor_id")),
                    _text(p.get("num_threads")),
                    _text(p.get("usage_source")),
                ]
            table.add_row(*row)
        return table
    stored = resources.get("workers") or []
    for w in stored:
        role = f"rank {w.get('rank')}" + (f" of {w['world_size']}" if w.get("world_size") else "")
        row = [role, _node(w), _text(w.get("pid")), "ended", _text(w.get("device"))]
        row += ["-", "-", "-"]
        if wide:
            row += [_text(w.get("node_id")), "-", "-", "-"]
        table.add_row(*row)
    return table if stored else None


def checkpoints_table(checkpoints: list[Mapping[str, Any]], wide: bool = False) -> Table:
    """Newest first; ``wide`` adds each checkpoint's full location."""
    columns = ["checkpoint", "step", "epoch", "attempt", "size", "written"]
    if wide:
        columns.append("uri")
    table = new_table(columns, right=("step", "epoch", "attempt", "size"))
    for c in reversed(checkpoints):
        written = c.get("created_at")
        row = [
            _text(c.get("name")),
            _text(c.get("global_step")),
            _text(c.get("epoch")),
            _text(c.get("attempt")),
            fmt_bytes(c.get("size_bytes")),
            f"{human_age(written)} ago" if written else "-",
        ]
        if wide:
            row.append(_text(c.get("uri")))
        table.add_row(*row)
    return table


def optional(read: Callable[[int], Any], job_id: int) -> Any:
    """``read(job_id)``, or the error's text when the server answers with one (a server from
    before these routes says 404): the job itself was read already and is still printed."""
    try:
        return read(job_id)
    except ApiError as e:
        return str(e)


def print_placement(resources: Any, checkpoints: Any, wide: bool = False) -> None:
    """The ``workers`` and ``checkpoints`` sections of ``densenas job``; a section whose read
    failed (a string: the error) says so in one line."""
    if not isinstance(resources, Mapping):
        console.print(f"[bold]workers[/] [dim]not available: {escape(str(resources))}[/]")
    else:
        _print_workers(resources, wide)
    if not isinstance(checkpoints, Mapping):
        console.print(f"[bold]checkpoints[/] [dim]not available: {escape(str(checkpoints))}[/]")
    else:
        _print_checkpoints(checkpoints, wide)


def _print_workers(resources: Mapping[str, Any], wide: bool) -> None:
    live = bool(resources.get("processes"))
    how = f" (live, {resources.get('source')})" if live else " (as its result recorded them)"
    table = workers_table(resources, wide)
    console.print(f"[bold]workers[/]{how if table is not None else ''}")
    if table is not None:
        console.print(table)
    message = resources.get("message")
    if message and (live or table is None):
        console.print(f"[dim]{escape(str(message))}[/]")
    if resources.get("ray_dashboard_url"):
        console.print(f"Ray dashboard: {escape(str(resources['ray_dashboard_url']))}")


def _print_checkpoints(checkpoints: Mapping[str, Any], wide: bool) -> None:
    rows = checkpoints.get("checkpoints") or []
    where = escape(str(checkpoints.get("storage_path", "")))
    console.print(f"[bold]checkpoints[/] under {where}")
    if checkpoints.get("message"):
        console.print(f"[yellow]{escape(str(checkpoints['message']))}[/]")
    elif rows:
        console.print(checkpoints_table(rows, wide))
    else:
        console.print("none yet")

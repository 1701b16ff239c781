"""Rendering of jobs and architectures: tables, status colours, human-readable numbers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from service.client import TERMINAL_STATUSES

from .. import core
from .common import console, print_json

STATUS_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def human_age(value: Any, now: datetime | None = None) -> str:
    dt = _parse_time(value)
    if dt is None:
        return "-"
    secs = max(0, int(((now or datetime.now(UTC)) - dt).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def fmt_num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_acc(v: Any) -> str:
    """An accuracy as a percentage with one decimal (``13.3 %``): a fraction (≤ 1) is scaled,
    a larger value is taken as a percentage already."""
    if _number(v):
        return f"{100 * v:.1f} %" if v <= 1.0 else f"{v:.1f} %"
    return "-"


def fmt_loss(v: Any) -> str:
    """A loss to 3 significant digits (``1.53``, ``0.0412``)."""
    return f"{v:.3g}" if _number(v) else fmt_num(v)


def fmt_seconds(v: Any) -> str:
    """A duration: ``42.1 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if not _number(v):
        return fmt_num(v)
    if v < 60:
        return f"{v:.1f} s"
    secs = round(v)
    if secs < 3600:
        return f"{secs // 60} min {secs % 60:02d} s"
    return f"{secs // 3600} h {secs % 3600 // 60:02d} min"


def fmt_bytes(v: Any) -> str:
    """A size in bytes with a binary unit (``512 B``, ``1.5 KiB``, ``12.3 MiB``)."""
    if not _number(v):
        return fmt_num(v)
    if abs(v) < 1024:
        return f"{int(v)} B"
    size, unit = float(v) / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if abs(size) < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


#: Metric names that are counts shown in M / K (fmt_millions).
_COUNT_METRICS = frozenset({"mult_adds", "params", "flops"})


def fmt_metric(key: str, v: Any, cost_unit: str | None = None) -> str:
    """A result or progress figure by its name: accuracies (``*acc*``, ``top1``, ``top5``, …)
    as percentages, losses to 3 significant digits, ``*_seconds`` as durations, ``*_bytes``
    in B/KiB/MiB, mult-adds and parameter counts in M/K, costs with ``cost_unit``; other
    numbers to 4 significant digits; objects as compact JSON."""
    if v is None:
        return "-"
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(v, default=str, separators=(", ", ": "))
    if not _number(v):
        return fmt_num(v)
    name = key.lower()
    if "acc" in name or re.fullmatch(r"(best_)?top-?\d+", name):
        return fmt_acc(v)
    if "loss" in name:
        return fmt_loss(v)
    if name == "seconds" or name.endswith("_seconds"):
        return fmt_seconds(v)
    if name == "bytes" or name.endswith("_bytes"):
        return fmt_bytes(v)
    if name in _COUNT_METRICS:
        return fmt_millions(v)
    if name.endswith("_ms"):
        return f"{fmt_num(v)} ms"
    if name.endswith("_cost") and cost_unit:
        return f"{fmt_num(v)} {cost_unit}"
    return fmt_num(v)


def metrics_text(metrics: Mapping[str, Any], skip: Collection[str] = ()) -> str:
    """``key value  key value …`` (rich markup) of a result's flat figures, each formatted by
    :func:`fmt_metric` (costs in the metrics' own ``cost_unit``); objects, lists and ``skip``
    are left out."""
    unit = metrics.get("cost_unit")
    return "  ".join(
        f"[bold]{escape(str(k))}[/] {escape(fmt_metric(str(k), v, unit))}"
        for k, v in metrics.items()
        if k not in skip and not isinstance(v, (Mapping, list, tuple))
    )


def fmt_millions(v: Any) -> str:
    """Counts in M (K below 0.1 M, so small blocks do not read as zero)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if abs(v) >= 1e5:
            return f"{v / 1e6:.2f}M"
        if abs(v) >= 1e3:
            return f"{v / 1e3:.1f}K"
        return str(int(v))
    return "-"


def status_text(s: Any) -> str:
    style = STATUS_STYLE.get(str(s), "white")
    return f"[{style}]{escape(str(s))}[/]"


def total_epochs(job: Mapping[str, Any]) -> int | None:
    spec = job.get("spec") or {}
    e = spec.get("epochs")
    if isinstance(e, int) and e > 0:
        return e
    default = getattr(core.JOB_SPECS.get(str(job.get("kind"))), "epochs", None)  # the spec's
    return default if isinstance(default, int) else None


def _progress_events(p: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(the latest ``epoch`` event's data, the latest ``step`` event's) of a job's ``progress``,
    which keeps the last event of each type under its type (service/jobs/events.py); a flat
    ``progress`` (one event's fields at the top) is taken as an epoch event."""
    if not isinstance(p.get("epoch"), Mapping) and not isinstance(p.get("step"), Mapping):
        return p, {}
    epoch, step = p.get("epoch"), p.get("step")
    return (
        epoch if isinstance(epoch, Mapping) else {},
        step if isinstance(step, Mapping) else {},
    )


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> Mapping[str, Any]:
    """Of two events' data, the later one by its ``seq`` (``a`` on a tie or without one)."""
    sa, sb = a.get("seq"), b.get("seq")
    if isinstance(sa, int) and isinstance(sb, int) and sb > sa:
        return b
    return a if a else b


def format_progress(job: Mapping[str, Any]) -> str:
    """One short cell for the jobs table out of the job's latest events: completed epochs of
    the total (a finished job's real last epoch: ``ep 3/3``), then the latest loss and
    accuracy."""
    p = job.get("progress") or {}
    if not isinstance(p, Mapping) or not p:
        return "-"
    epoch_ev, step_ev = _progress_events(p)
    latest = _newer(epoch_ev, step_ev)
    parts = []
    total = p.get("epochs") or epoch_ev.get("epochs") or total_epochs(job)
    if isinstance(epoch_ev.get("epoch"), int):
        done: int | None = epochs_done(epoch_ev)
    elif isinstance(step_ev.get("epoch"), int):  # no epoch ended yet: the steps' epoch index
        done = step_ev["epoch"]
    else:
        done = None
    if done is not None:
        parts.append(f"ep {done}/{total}" if total else f"ep {done}")
    elif "done" in latest and "total" in latest:
        parts.append(f"{latest['done']}/{latest['total']}")
    loss = latest.get("loss", latest.get("train_loss"))
    if _number(loss):
        parts.append(f"loss {fmt_loss(loss)}")
    acc = latest.get("val_acc", latest.get("acc", latest.get("top1")))
    if _number(acc):
        parts.append(f"acc {fmt_acc(acc)}")
    return " ".join(parts) or "-"


def epochs_done(data: Mapping[str, Any]) -> int:
    """Completed epochs from an ``epoch`` event: its ``epoch`` field is the index of the epoch
    it ends, counted from 0 (densenas_core.search / retrain), or from ``epoch_base`` when the
    event says so (1: the epoch's number is the count)."""
    e = data.get("epoch")
    if not isinstance(e, int):
        return 0
    return e + 1 if data.get("epoch_base", 0) == 0 else e


def new_table(columns: Iterable[str], right: Collection[str] = ()) -> Table:
    """A listing without outer edges and with a bold header; the ``right`` columns (numbers)
    right-justified."""
    table = Table(show_edge=False, header_style="bold")
    for col in columns:  # cells fold rather than end in "…": names and numbers stay whole
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return table


def print_listing(page: Any, as_json: bool, table: Callable[[Any], Table], empty: str) -> None:
    """A list answer: as JSON, else ``table(rows)`` of its rows (a page's ``data`` or the bare
    list), or the line ``empty`` when there are none."""
    if as_json:
        print_json(page)
        return
    rows = page.get("data", []) if isinstance(page, Mapping) else page
    console.print(table(rows) if rows else empty)


def _when(v: Any) -> str:
    """A time as a short local date and time, or ``-``."""
    t = _parse_time(v)
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def job_table(jobs: list[Mapping[str, Any]], wide: bool = False) -> Table:
    """One row per job; ``wide`` adds attempt/max, started, finished and the last heartbeat."""
    columns = ["id", "kind", "status", "project", "priority", "tags", "progress", "age"]
    if wide:
        columns += ["attempt", "started", "finished", "heartbeat"]
    table = new_table(columns, right=("id", "priority", "attempt"))
    for j in jobs:
        status = status_text(j.get("status"))
        if j.get("cancel_requested") and j.get("status") not in TERMINAL_STATUSES:
            status += " [magenta](cancelling)[/]"
        table.add_row(
            str(j.get("id")),
            str(j.get("kind")),
            status,
            escape(str(j.get("project", "-"))),
            str(j.get("priority", 0)),
            escape(", ".join(j.get("tags") or ())),
            escape(format_progress(j)),
            human_age(j.get("created_at")),
            *(
                (
                    f"{j.get('attempt', 1)}/{j.get('max_attempts', '?')}",
                    _when(j.get("started_at")),
                    _when(j.get("finished_at")),
                    f"{human_age(j['heartbeat_at'])} ago" if j.get("heartbeat_at") else "-",
                )
                if wide
                else ()
            ),
        )
    return table


def print_job(job: Mapping[str, Any]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", f"{job.get('id')} ({job.get('kind')})")
    table.add_row(
        "status",
        status_text(job.get("status"))
        + (" [magenta]cancel requested[/]" if job.get("cancel_requested") else ""),
    )
    for key in ("project", "priority"):
        table.add_row(key, escape(str(job.get(key))))
    if job.get("tags"):
        table.add_row("tags", escape(", ".join(job["tags"])))
    table.add_row("attempt", f"{job.get('attempt')}/{job.get('max_attempts')}")
    for key in ("created_at", "scheduled_at", "started_at", "heartbeat_at", "finished_at"):
        if job.get(key):
            table.add_row(key.replace("_at", ""), f"{job[key]} ({human_age(job[key])} ago)")
    if job.get("architecture_id") is not None:
        table.add_row("architecture", str(job["architecture_id"]))
    produced = job.get("produced")
    if produced:
        table.add_row("produced", escape(json.dumps(produced)))
    if job.get("progress"):
        table.add_row("progress", escape(format_progress(job)))
    if job.get("error"):
        table.add_row("error", f"[red]{escape(str(job['error']))}[/]")
    console.print(table)
    print_attempt_errors(job)
    console.print("[bold]spec[/]")
    console.print_json(json.dumps(job.get("spec") or {}, default=str))
    result = job.get("result")
    if isinstance(result, Mapping) and result:
        metrics = result.get("metrics")
        if isinstance(metrics, Mapping) and metrics:
            console.print("[bold]metrics[/]")
            print_metrics(metrics)
        elif metrics:
            console.print("[bold]metrics[/]")
            console.print_json(json.dumps(metrics, default=str))
        arch = result.get("architecture")
        if isinstance(arch, Mapping):
            print_arch_doc(arch)


def print_metrics(metrics: Mapping[str, Any]) -> None:
    """A result's metrics, one ``name value`` row each, formatted by :func:`fmt_metric` (the
    unformatted numbers: ``--json``)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    unit = metrics.get("cost_unit")
    for k, v in metrics.items():
        table.add_row(escape(str(k)), escape(fmt_metric(str(k), v, unit)))
    console.print(table)


def architectures_table(rows: list[Mapping[str, Any]]) -> Table:
    """``densenas arch list``: one row an architecture."""
    table = new_table(
        ("id", "name", "space", "mult-adds", "params", "accuracy", "latency", "job", "age"),
        right=("id", "mult-adds", "params", "accuracy", "job"),
    )
    for a in rows:
        lat = a.get("predicted_latency") or a.get("latency_ms")
        lat_txt = "-"
        if isinstance(lat, (int, float)):
            lat_txt = f"{lat:.2f} ms"
        elif isinstance(lat, Mapping) and lat:
            lat_txt = fmt_latency(next(iter(lat.values())))
        table.add_row(
            str(a.get("id")),
            escape(str(a.get("name") or "-")),
            escape(str(a.get("space") or "-")),
            fmt_millions(a.get("mult_adds")),
            fmt_millions(a.get("params")),
            fmt_acc(a.get("accuracy_top1", a.get("accuracy"))),
            lat_txt,
            str(a.get("job_id") if a.get("job_id") is not None else "-"),
            human_age(a.get("created_at")),
        )
    return table


def latency_tables_table(rows: list[Mapping[str, Any]]) -> Table:
    """``densenas tables``: one row a latency lookup table."""
    table = new_table(
        ("id", "device", "space", "batch", "input", "dtype", "method", "entries", "job", "age"),
        right=("id", "batch", "input", "entries", "job"),
    )
    for t in rows:
        device = t.get("device_name") or t.get("device") or "-"
        kind = t.get("device_kind")
        if kind and kind not in str(device):
            device = f"{kind} {device}"
        table.add_row(
            str(t.get("id")),
            escape(str(device)),
            escape(str(t.get("space") or "-")),
            str(t.get("batch", "-")),
            str(t.get("input_size") or "-"),
            escape(str(t.get("dtype") or "-")),
            escape(str(t.get("method") or "-")),
            str(t.get("entry_count", "-")),
            str(t.get("job_id") if t.get("job_id") is not None else "-"),
            human_age(t.get("created_at")),
        )
    return table


def print_facts(data: Mapping[str, Any]) -> None:
    """One ``key value`` line a field (``densenas me``)."""
    for k, v in data.items():
        console.print(f"[bold]{escape(str(k))}[/] {escape(str(v))}")


#: Lines of each attempt's traceback tail that ``densenas job`` shows (``--json`` has all).
TAIL_LINES_SHOWN = 12


def print_attempt_errors(job: Mapping[str, Any]) -> None:
    """Why each failed attempt failed: its error and the end of its worker's traceback."""
    errors = job.get("attempt_errors") or []
    if not errors:
        return
    console.print("[bold]attempt errors[/]")
    for entry in errors:
        console.print(
            f"  attempt {entry.get('attempt')}: [red]{escape(str(entry.get('error')))}[/]",
            soft_wrap=True,
        )
        lines = (entry.get("traceback_tail") or "").splitlines()[-TAIL_LINES_SHOWN:]
        for line in lines:
            console.print(f"    {line}", style="dim", markup=False, soft_wrap=True)
    if any(e.get("traceback_tail") for e in errors):
        console.print(f"  [dim](full traceback tails: densenas job {job.get('id')} --json)[/]")


def _layers_text(layers: Any) -> str:
    if not layers:
        return "-"
    return "\n".join(str(x) for x in layers)  # one op a line: a narrow column never splits one


def print_arch_doc(
    doc: Mapping[str, Any], summary: Mapping[str, Any] | None = None, title: str | None = None
) -> None:
    """The block table of an architecture document (with per-block costs when known)."""
    per_block = {}
    if summary:
        per_block = {r.get("block"): r for r in summary.get("blocks", [])}
    name = doc.get("name") or "architecture"
    table = Table(
        title=title
        or f"{name} (space {doc.get('space', '-')}, "
        f"{doc.get('input_size', '?')}px, {doc.get('num_classes', '?')} classes)",
        show_edge=False,
        header_style="bold",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    blocks = list(doc.get("blocks") or [])
    ops = [str(b.get("align_op")) for b in blocks] + [
        str(op) for b in blocks for op in (b.get("layers") or [])
    ]
    op_width = max((len(o) for o in ops), default=4)
    # Op names and numbers are the point of this table: never elided. Narrow terminals and
    # pipes (80 columns) get short headers and op columns exactly as wide as the longest op.
    cols: list[tuple[str, JustifyMethod, int | None]] = [
        ("#", "right", None),
        ("route", "left", None),
        ("channels", "left", None),
        ("stride", "right", None),
        ("size", "right", None),
        ("align op", "left", op_width),
        ("layers", "left", op_width),
    ]
    if per_block:
        cols += [("MAdds", "right", None), ("params", "right", None)]
    for c, justify, width in cols:
        table.add_column(
            c, justify=justify, no_wrap=width is None, min_width=width, overflow="fold"
        )
    for i, b in enumerate(blocks):
        row = per_block.get(i, {})
        src, dst = b.get("from_block"), b.get("to_block")
        route = f"{'-' if src is None else src}→{'-' if dst is None else dst}"
        size = f"{row['in_size']}→{row['out_size']}" if "in_size" in row else "-"
        cells = [
            str(i),
            route,
            f"{b.get('c_in')}→{b.get('c_out')}",
            str(b.get("stride")),
            size,
            escape(str(b.get("align_op"))),
            escape(_layers_text(b.get("layers"))),
        ]
        if per_block:
            cells += [fmt_millions(row.get("mult_adds")), fmt_millions(row.get("params"))]
        table.add_row(*cells)
    console.print(table)
    if summary:
        console.print(
            f"[bold]mult-adds[/] {summary['mult_adds'] / 1e6:.1f} M   "
            f"[bold]params[/] {summary['params'] / 1e6:.2f} M   "
            f"[bold]depth[/] {summary.get('depth', '-')}"
        )


def local_summary(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-block costs from the closed-form counter (no forward pass); None if unavailable."""
    try:
        from ..core import arch_summary

        return arch_summary(dict(doc))
    except Exception:  # noqa: BLE001 - no summary is shown as none, not as an error
        return None


def _arch_doc(arch: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("doc", "document", "architecture"):
        if isinstance(arch.get(key), Mapping):
            return arch[key]
    return arch


def print_architecture(arch: Mapping[str, Any]) -> None:
    doc = _arch_doc(arch)
    name = arch.get("name") or doc.get("name") or ""
    title = (
        f"architecture {arch.get('id', '')} {name} — space "
        f"{doc.get('space') or arch.get('space') or '-'}, {doc.get('input_size', '?')}px, "
        f"{doc.get('num_classes', '?')} classes"
    ).replace("  ", " ")
    summary = local_summary(doc)
    print_arch_doc(doc, summary, title=title)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    if summary is None:  # otherwise the block table's footer has them
        if arch.get("mult_adds") is not None:
            facts.add_row("mult-adds", f"{arch['mult_adds'] / 1e6:.1f} M")
        if arch.get("params") is not None:
            facts.add_row("params", f"{arch['params'] / 1e6:.2f} M")
    for key, label in (
        ("accuracy_top1", "top-1"),
        ("accuracy_top5", "top-5"),
        ("accuracy", "accuracy"),
    ):
        if arch.get(key) is not None:
            facts.add_row(label, fmt_acc(arch[key]))
    if arch.get("derived_from") is not None:
        facts.add_row("derived from", f"architecture {arch['derived_from']}")
    if arch.get("job_id") is not None:
        facts.add_row("search job", str(arch["job_id"]))
    for label, key, what in (
        ("predicted latency", "predicted_latency", "table "),
        ("measured latency", "measured_latency", ""),
    ):
        lat = arch.get(key)
        if isinstance(lat, Mapping):
            for k, v in lat.items():
                facts.add_row(f"{label} ({escape(what + str(k))})", fmt_latency(v))
        elif isinstance(lat, list):
            for item in lat:
                if isinstance(item, Mapping):
                    which = item.get("table_id", item.get("device", item.get("name", "?")))
                    facts.add_row(
                        f"{label} ({escape(str(which))})",
                        fmt_latency(item.get("ms", item.get("latency_ms", item))),
                    )
    retrains = arch.get("retrains")
    if isinstance(retrains, list):
        for r in retrains:
            facts.add_row("retrain", retrain_text(r))
    elif retrains:
        facts.add_row("retrains", escape(json.dumps(retrains, default=str)))
    console.print(facts)


def retrain_text(r: Any) -> str:
    """One retrain of an architecture: ``job 12 succeeded  top1 13.3 %  top5 52.1 %``."""
    if not isinstance(r, Mapping):
        return escape(str(r))
    head = " ".join(
        x
        for x in (
            f"job {r['job_id']}" if r.get("job_id") is not None else "",
            status_text(r["status"]) if r.get("status") else "",
        )
        if x
    )
    rest = metrics_text(r, skip=("job_id", "status"))
    return f"{head}  {rest}" if head and rest else head or rest


def fmt_latency(v: Any) -> str:
    if isinstance(v, Mapping):
        ms = v.get("ms", v.get("latency_ms", v.get("mean_ms")))
        if ms is not None:
            return f"{fmt_num(ms)} ms"
        return escape(json.dumps(v, default=str))
    if isinstance(v, (int, float)):
        return f"{fmt_num(v)} ms"
    return escape(str(v))

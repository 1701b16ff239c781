"""The ``densenas`` command line: run the control plane, submit and watch jobs, inspect results.

Remote commands go through :class:`service.client.DenseNASClient` (the REST contract), so the CLI
sees exactly what any other client sees. A few commands are deliberately local: ``serve``,
``migrate`` and ``token create`` act on the configured database directly (they are how a server
gets started and its first tokens minted), and ``space show`` / ``arch flops`` answer from
``densenas_core`` without a server. Every command that prints data takes ``--json`` for scripts;
every failure is one red line (the problem+json detail) and exit code 1, never a traceback.
"""
from __future__ import annotations

import functools
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn)
from rich.table import Table

from service.client import TERMINAL_STATUSES, ApiError, DenseNASClient, SseEvent

app = typer.Typer(name="densenas", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="DenseNAS job orchestration: search, retrain and profile on Ray.")
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
STATUS_STYLE = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                "cancelled": "magenta"}


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
            url = getattr(getattr(e, "request", None), "url", None)
            where = f"{url.scheme}://{url.host}:{url.port}" if url is not None else "the server"
            err_console.print(f"[bold red]Error:[/] [red]cannot reach {escape(where)} "
                              f"({escape(str(e))}); is `densenas serve` running? "
                              "Set DENSENAS_URL to point elsewhere.[/]")
            raise typer.Exit(1) from None
        except httpx.HTTPError as e:
            err_console.print(f"[bold red]Error:[/] "
                              f"[red]HTTP: {escape(str(e) or type(e).__name__)}[/]")
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
            err_console.print(f"[bold red]Error:[/] [red]{type(e).__name__}: {escape(str(e))}[/]"
                              " [dim](DENSENAS_DEBUG=1 shows the traceback)[/]")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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


@app.callback()
def main(ctx: typer.Context,
         url: Annotated[str | None, typer.Option(
             "--url", envvar="DENSENAS_URL", show_envvar=True,
             help="Control plane URL (default http://127.0.0.1:8000 or the config file).")] = None,
         token: Annotated[str | None, typer.Option(
             "--token", envvar="DENSENAS_TOKEN", show_envvar=False,
             help="API token (default: DENSENAS_TOKEN, ~/.config/densenas/config.toml, "
                  "then the local server's admin token file).")] = None,
         timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 30.0,
         ) -> None:
    ctx.obj = {"url": url, "token": token, "timeout": timeout}


def client_from(ctx: typer.Context) -> DenseNASClient:
    obj = ctx.find_root().obj or {}
    return DenseNASClient.from_env(url=obj.get("url"), token=obj.get("token"),
                                   timeout=obj.get("timeout", 30.0))


# -- formatting helpers ----------------------------------------------------------------------

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


def _fmt_num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _fmt_acc(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{100 * v:.1f}%" if v <= 1.0 else f"{v:.1f}%"
    return "-"


def _fmt_millions(v: Any) -> str:
    """Counts in M (K below 0.1 M, so small blocks do not read as zero)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if abs(v) >= 1e5:
            return f"{v / 1e6:.2f}M"
        if abs(v) >= 1e3:
            return f"{v / 1e3:.1f}K"
        return str(int(v))
    return "-"


def _status(s: Any) -> str:
    style = STATUS_STYLE.get(str(s), "white")
    return f"[{style}]{escape(str(s))}[/]"


def _total_epochs(job: Mapping[str, Any]) -> int | None:
    spec = job.get("spec") or {}
    e = spec.get("epochs")
    if isinstance(e, int) and e > 0:
        return e
    if job.get("kind") == "search":
        return 4
    if job.get("kind") == "retrain":
        return 10
    return None


def format_progress(job: Mapping[str, Any]) -> str:
    """One short cell for the jobs table out of the job's latest metrics."""
    p = job.get("progress") or {}
    if not isinstance(p, Mapping) or not p:
        return "-"
    parts = []
    total = p.get("epochs") or _total_epochs(job)
    if "epoch" in p:
        done = _epochs_done(p)
        parts.append(f"ep {done}/{total}" if total else f"ep {done}")
    elif "done" in p and "total" in p:
        parts.append(f"{p['done']}/{p['total']}")
    loss = p.get("loss", p.get("train_loss"))
    if loss is not None:
        parts.append(f"loss {_fmt_num(loss, 3)}")
    acc = p.get("val_acc", p.get("acc", p.get("top1")))
    if acc is not None:
        parts.append(f"acc {_fmt_acc(acc)}")
    return " ".join(parts) or "-"


def _epochs_done(data: Mapping[str, Any]) -> int:
    """Completed epochs from an ``epoch`` event (its ``epoch`` field counts from 0)."""
    e = data.get("epoch")
    if not isinstance(e, int):
        return 0
    return e + 1 if data.get("epoch_base", 0) == 0 else e


def job_table(jobs: list[Mapping[str, Any]]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "kind", "status", "project", "priority", "progress", "age"):
        table.add_column(col, justify="right" if col in ("id", "priority") else "left")
    for j in jobs:
        status = _status(j.get("status"))
        if j.get("cancel_requested") and j.get("status") not in TERMINAL_STATUSES:
            status += " [magenta](cancelling)[/]"
        table.add_row(str(j.get("id")), str(j.get("kind")), status,
                      escape(str(j.get("project", "-"))),
                      str(j.get("priority", 0)), escape(format_progress(j)),
                      human_age(j.get("created_at")))
    return table


def print_job(job: Mapping[str, Any]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", f"{job.get('id')} ({job.get('kind')})")
    table.add_row("status", _status(job.get("status"))
                  + (" [magenta]cancel requested[/]" if job.get("cancel_requested") else ""))
    for key in ("project", "priority"):
        table.add_row(key, escape(str(job.get(key))))
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
        if metrics:
            console.print("[bold]metrics[/]")
            console.print_json(json.dumps(metrics, default=str))
        arch = result.get("architecture")
        if isinstance(arch, Mapping):
            print_arch_doc(arch)


#: Lines of each attempt's traceback tail that ``densenas job`` shows (``--json`` has all).
TAIL_LINES_SHOWN = 12


def print_attempt_errors(job: Mapping[str, Any]) -> None:
    """Why each failed attempt failed: its error and the end of its worker's traceback."""
    errors = job.get("attempt_errors") or []
    if not errors:
        return
    console.print("[bold]attempt errors[/]")
    for entry in errors:
        console.print(f"  attempt {entry.get('attempt')}: "
                      f"[red]{escape(str(entry.get('error')))}[/]", soft_wrap=True)
        lines = (entry.get("traceback_tail") or "").splitlines()[-TAIL_LINES_SHOWN:]
        for line in lines:
            console.print(f"    {line}", style="dim", markup=False, soft_wrap=True)
    if any(e.get("traceback_tail") for e in errors):
        console.print(f"  [dim](full traceback tails: densenas job {job.get('id')} --json)[/]")


def _layers_text(layers: Any) -> str:
    if not layers:
        return "-"
    return ", ".join(str(x) for x in layers)


def print_arch_doc(doc: Mapping[str, Any], summary: Mapping[str, Any] | None = None,
                   title: str | None = None) -> None:
    """The block table of an architecture document (with per-block costs when known)."""
    per_block = {}
    if summary:
        per_block = {r.get("block"): r for r in summary.get("blocks", [])}
    name = doc.get("name") or "architecture"
    table = Table(title=title or f"{name} (space {doc.get('space', '-')}, "
                  f"{doc.get('input_size', '?')}px, {doc.get('num_classes', '?')} classes)",
                  show_edge=False, header_style="bold", title_justify="left")
    cols = ["#", "from→to", "c_in→c_out", "stride", "size", "align op", "basic layers"]
    if per_block:
        cols += ["mult-adds", "params"]
    for c in cols:
        table.add_column(c, justify="right" if c in ("#", "stride", "size", "mult-adds", "params")
                         else "left")
    for i, b in enumerate(doc.get("blocks") or []):
        row = per_block.get(i, {})
        src, dst = b.get("from_block"), b.get("to_block")
        route = f"{'-' if src is None else src}→{'-' if dst is None else dst}"
        size = (f"{row['in_size']}→{row['out_size']}" if "in_size" in row else "-")
        cells = [str(i), route, f"{b.get('c_in')}→{b.get('c_out')}", str(b.get("stride")), size,
                 escape(str(b.get("align_op"))), escape(_layers_text(b.get("layers")))]
        if per_block:
            cells += [_fmt_millions(row.get("mult_adds")), _fmt_millions(row.get("params"))]
        table.add_row(*cells)
    console.print(table)
    if summary:
        console.print(f"[bold]mult-adds[/] {summary['mult_adds'] / 1e6:.1f} M   "
                      f"[bold]params[/] {summary['params'] / 1e6:.2f} M   "
                      f"[bold]depth[/] {summary.get('depth', '-')}")


def _local_summary(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-block costs from the closed-form counter (no forward pass); None if unavailable."""
    try:
        from densenas_core.arch import arch_summary

        return arch_summary(dict(doc))
    except Exception:
        return None


# -- the live progress view (watch, submit --watch, demo) ------------------------------------

class JobWatcher:
    """Renders a job's event stream as a rich progress bar until the job ends.

    An epoch bar is driven by ``epoch`` events; ``step`` events update a per-epoch step bar
    when the loop reports its step count, and the running loss/acc/expected cost either way.
    ``log`` events and status changes are printed above the bars.
    """

    def __init__(self, client: DenseNASClient, job: Mapping[str, Any], *,
                 out: Console | None = None, json_lines: bool = False) -> None:
        self.client = client
        self.job = dict(job)
        self.job_id = int(job["id"])
        self.out = out or console
        self.json_lines = json_lines
        self.total_epochs = _total_epochs(job)
        self.metrics: dict[str, Any] = {}
        self.last_status = job.get("status")
        self.events_seen = 0
        self.steps_total = 0
        self.cost_unit = ""

    # rendering
    def _metrics_text(self) -> str:
        m = self.metrics
        parts = []
        if m.get("phase"):
            parts.append(f"[cyan]{m['phase']}[/]")
        for key, label in (("loss", "loss"), ("acc", "acc"), ("val_loss", "val_loss"),
                           ("val_acc", "val_acc"), ("top1", "top1"),
                           ("expected_cost", "cost")):
            v = m.get(key)
            if v is None:
                continue
            text = _fmt_acc(v) if "acc" in key or key == "top1" else _fmt_num(v, 4)
            if key == "expected_cost" and self.cost_unit:
                text += f" {self.cost_unit}"
            parts.append(f"{label} {escape(text)}")
        return " ".join(parts)

    def run(self) -> dict[str, Any]:
        """Follow the job until it is terminal; returns the final job document."""
        if self.json_lines:
            return self._run_json()
        if self.job.get("status") in TERMINAL_STATUSES:
            self._replay_quietly()
            return self.client.get_job(self.job_id)
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[metrics]}"), console=self.out,
                            transient=False, refresh_per_second=4)
        with progress:
            epoch_task = progress.add_task(
                f"job {self.job_id} {self.job.get('kind')} epochs", total=self.total_epochs,
                metrics=f"[{STATUS_STYLE.get(str(self.last_status), 'white')}]"
                        f"{self.last_status}[/]")
            step_task: TaskID | None = None
            for ev in self.client.stream_events(self.job_id):
                self.events_seen += 1
                step_task = self._apply(ev, progress, epoch_task, step_task)
                if self._is_terminal_event(ev):
                    break
        return self.client.get_job(self.job_id)

    def _replay_quietly(self) -> None:
        try:
            page = self.client.job_events(self.job_id)
        except ApiError:
            return
        for e in page.get("data", []):
            if e.get("type") in ("epoch", "step"):
                self.metrics.update(_metric_fields(e.get("data") or {}))

    def _run_json(self) -> dict[str, Any]:
        for ev in self.client.stream_events(self.job_id):
            self.events_seen += 1
            sys.stdout.write(json.dumps({"id": ev.id, "type": ev.type, "data": ev.payload},
                                        default=str) + "\n")
            sys.stdout.flush()
            if self._is_terminal_event(ev):
                break
        job = self.client.get_job(self.job_id)
        sys.stdout.write(json.dumps({"id": None, "type": "job", "data": job}, default=str) + "\n")
        sys.stdout.flush()
        return job

    @staticmethod
    def _is_terminal_event(ev: SseEvent) -> bool:
        """The server's ``end`` event: the job is terminal and every event has been sent (a
        terminal ``status`` event may still be followed by events committed with it)."""
        return ev.type == "end"

    def _apply(self, ev: SseEvent, progress: Progress, epoch_task: TaskID,
               step_task: TaskID | None) -> TaskID | None:
        data = ev.payload if isinstance(ev.payload, Mapping) else {}
        kind = ev.type
        if kind == "step":
            self.metrics.update(_metric_fields(data))
            total = data.get("steps_per_epoch") or data.get("num_steps")
            step = data.get("step")
            if isinstance(total, int) and total > 0:
                done = min((step % total) + 1 if isinstance(step, int) else 0, total)
                self.steps_total = total
            else:  # no count from the loop: the last epoch's, else an open-ended counter
                total = self.steps_total or None
                done = step + 1 if isinstance(step, int) else 0
                if total is not None and done > total:
                    total = self.steps_total = None
            if step_task is None:
                step_task = progress.add_task("  steps", total=total, metrics="")
            progress.update(step_task, total=total, completed=done)
            if isinstance(data.get("epoch"), int) and self.total_epochs:
                progress.update(epoch_task, description=f"job {self.job_id} "
                                f"{self.job.get('kind')} epoch {data['epoch'] + 1}")
        elif kind == "epoch":
            self.metrics.update(_metric_fields(data))
            done = _epochs_done(data)
            progress.update(epoch_task, completed=done)
            if isinstance(data.get("steps"), int) and data["steps"] > 0:
                self.steps_total = data["steps"]
            if data.get("cost_unit"):
                self.cost_unit = str(data["cost_unit"])
            if step_task is not None:  # the next step event starts it again
                progress.update(step_task, total=self.steps_total or None,
                                completed=self.steps_total or 0)
            self.out.print(f"  epoch {done}/{self.total_epochs or '?'}  "
                           + _epoch_line(data))
            search_line = _search_progress_line(data)
            if search_line:
                self.out.print(f"    {search_line}")
        elif kind in ("status", "transition", "job"):
            status = data.get("status", data.get("to"))
            if status and status != self.last_status:
                self.last_status = status
                note = f" ({escape(str(data['error']))})" if data.get("error") else ""
                self.out.print(f"  status → {_status(status)}{note}")
        elif kind == "log":
            msg = data.get("message") if isinstance(data, Mapping) else ev.payload
            self.out.print(f"  [dim]{escape(str(msg))}[/]")
        elif kind in ("progress", "profile"):
            done, total = data.get("done"), data.get("total")
            if isinstance(done, int) and isinstance(total, int):
                progress.update(epoch_task, total=total, completed=done)
        status_txt = f"[{STATUS_STYLE.get(str(self.last_status), 'white')}]{self.last_status}[/]"
        progress.update(epoch_task, metrics=f"{status_txt} {self._metrics_text()}")
        return step_task


def _metric_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("phase", "loss", "acc", "val_loss", "val_acc", "expected_cost", "top1", "lr")
    out = {k: data[k] for k in keys if k in data}
    if "train_loss" in data:
        out["loss"] = data["train_loss"]
    if "train_acc" in data:
        out["acc"] = data["train_acc"]
    return out


def _epoch_line(data: Mapping[str, Any]) -> str:
    parts = []
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "top1", "expected_cost", "lr"):
        if key in data and data[key] is not None:
            v = data[key]
            text = _fmt_acc(v) if "acc" in key or key == "top1" else _fmt_num(v)
            if key == "expected_cost" and data.get("cost_unit"):
                text += f" {data['cost_unit']}"
            parts.append(f"{key} {escape(text)}")
    return "  ".join(parts)


def _fmt_fixed3(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


#: A search epoch's progress figures (densenas_core.search): field, label, format.
_SEARCH_PROGRESS = (
    ("val_acc", "val acc argmax net", _fmt_acc),
    ("derived_val_acc", "derived single-path", _fmt_acc),
    ("supernet_val_acc", "supernet (sampled)", _fmt_acc),
    ("alpha_entropy", "α entropy", _fmt_fixed3),
    ("beta_entropy", "β entropy", _fmt_fixed3),
    ("alpha_top_gap", "α top gap", _fmt_fixed3),
    ("argmax_changes", "argmax changes", str),
)


def _search_progress_line(data: Mapping[str, Any]) -> str:
    """Val accuracy of the argmax sub-network, of the derived single-path network and of the
    sampled supernet, α/β entropy (1 =
    uniform, 0 = decided), α top gap and α rows whose argmax op changed; "" for an epoch
    without them (not a search, or an older worker)."""
    if all(data.get(key) is None for key, _, _ in _SEARCH_PROGRESS[2:]):
        return ""
    return " · ".join(f"{label} {fmt(data[key])}" for key, label, fmt in _SEARCH_PROGRESS
                      if data.get(key) is not None)


def finish_watch(client: DenseNASClient, job: Mapping[str, Any], as_json: bool) -> None:
    """After a job ended: print its outcome (and the derived architecture); exit 1 unless it
    succeeded."""
    status = job.get("status")
    if not as_json:
        if status == "succeeded":
            console.print(f"job {job['id']} {_status(status)}")
            if job.get("kind") == "search":
                show_search_result(client, job)
            elif job.get("kind") == "retrain":
                metrics = (job.get("result") or {}).get("metrics") or {}
                console.print("  ".join(f"[bold]{k}[/] {_fmt_num(v)}" for k, v in metrics.items()))
            elif job.get("kind") == "profile":
                produced = job.get("produced") or {}
                console.print(f"latency table: {escape(json.dumps(produced))}")
        else:
            err_console.print(f"[bold red]job {job['id']} {status}[/]"
                              + (f"[red]: {escape(str(job['error']))}[/]" if job.get("error")
                                 else ""))
    if status != "succeeded":
        raise typer.Exit(1)


def _produced_arch_ids(job: Mapping[str, Any]) -> list[int]:
    produced = job.get("produced") or {}
    ids: list[Any] = []
    if isinstance(produced, Mapping):
        for key in ("architectures", "architecture_ids", "architecture", "architecture_id"):
            v = produced.get(key)
            if isinstance(v, list):
                ids += v
            elif v is not None:
                ids.append(v)
    elif isinstance(produced, list):
        for item in produced:
            if isinstance(item, Mapping) and item.get("type", "architecture") == "architecture":
                ids.append(item.get("id"))
            elif isinstance(item, int):
                ids.append(item)
    result = job.get("result") or {}
    if not ids and isinstance(result, Mapping) and result.get("architecture_id") is not None \
            and job.get("kind") == "search":
        ids.append(result["architecture_id"])
    return [int(i) for i in ids if isinstance(i, int) or (isinstance(i, str) and i.isdigit())]


def show_search_result(client: DenseNASClient, job: Mapping[str, Any]) -> None:
    ids = _produced_arch_ids(job)
    if ids:
        arch = client.get_architecture(ids[0])
        print_architecture(arch)
        return
    doc = (job.get("result") or {}).get("architecture")
    if isinstance(doc, Mapping):
        print_arch_doc(doc, _local_summary(doc), title="derived architecture")


def _arch_doc(arch: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("doc", "document", "architecture"):
        if isinstance(arch.get(key), Mapping):
            return arch[key]
    return arch


def print_architecture(arch: Mapping[str, Any]) -> None:
    doc = _arch_doc(arch)
    name = arch.get("name") or doc.get("name") or ""
    title = (f"architecture {arch.get('id', '')} {name} — space "
             f"{doc.get('space') or arch.get('space') or '-'}, {doc.get('input_size', '?')}px, "
             f"{doc.get('num_classes', '?')} classes").replace("  ", " ")
    summary = _local_summary(doc)
    print_arch_doc(doc, summary, title=title)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    if summary is None:  # otherwise the block table's footer has them
        if arch.get("mult_adds") is not None:
            facts.add_row("mult-adds", f"{arch['mult_adds'] / 1e6:.1f} M")
        if arch.get("params") is not None:
            facts.add_row("params", f"{arch['params'] / 1e6:.2f} M")
    for key, label in (("accuracy_top1", "top-1"), ("accuracy_top5", "top-5"),
                       ("accuracy", "accuracy")):
        if arch.get(key) is not None:
            facts.add_row(label, _fmt_acc(arch[key]))
    if arch.get("derived_from") is not None:
        facts.add_row("derived from", f"architecture {arch['derived_from']}")
    if arch.get("job_id") is not None:
        facts.add_row("search job", str(arch["job_id"]))
    for label, key, what in (("predicted latency", "predicted_latency", "table "),
                             ("measured latency", "measured_latency", "")):
        lat = arch.get(key)
        if isinstance(lat, Mapping):
            for k, v in lat.items():
                facts.add_row(f"{label} ({escape(what + str(k))})", _fmt_latency(v))
        elif isinstance(lat, list):
            for item in lat:
                if isinstance(item, Mapping):
                    which = item.get("table_id", item.get("device", item.get("name", "?")))
                    facts.add_row(f"{label} ({escape(str(which))})",
                                  _fmt_latency(item.get("ms", item.get("latency_ms", item))))
    retrains = arch.get("retrains")
    if retrains:
        facts.add_row("retrains", escape(json.dumps(retrains, default=str)))
    console.print(facts)


def _fmt_latency(v: Any) -> str:
    if isinstance(v, Mapping):
        ms = v.get("ms", v.get("latency_ms", v.get("mean_ms")))
        if ms is not None:
            return f"{_fmt_num(ms)} ms"
        return escape(json.dumps(v, default=str))
    if isinstance(v, (int, float)):
        return f"{_fmt_num(v)} ms"
    return escape(str(v))


# -- server-side commands (local database) ---------------------------------------------------

def _settings(**overrides: Any) -> Any:
    from service.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
@cli_errors
def serve(host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
          port: Annotated[int | None, typer.Option(help="Port.")] = None,
          executor: Annotated[str | None, typer.Option(
              help="ray | inline | none (default: DENSENAS_EXECUTOR or ray).")] = None) -> None:
    """Run the control plane (REST API, SSE, dashboard, dispatcher)."""
    from service.server import serve as run_server

    run_server(_settings(host=host, port=port, executor=executor))


@app.command()
@cli_errors
def migrate() -> None:
    """Upgrade the configured database to the latest schema (idempotent)."""
    from service.db import run_migrations

    settings = _settings()
    run_migrations(settings.database_url)
    err_console.print(f"database at head: {_redact(settings.database_url)}")


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@token_app.command("create")
@cli_errors
def token_create(ctx: typer.Context,
                 name: Annotated[str, typer.Option(help="Who or what the token is for.")] = "cli",
                 project: Annotated[str, typer.Option(
                     help="Project the token acts in.")] = "default",
                 admin: Annotated[bool, typer.Option("--admin", help="Admin rights.")] = False,
                 remote: Annotated[bool, typer.Option(
                     "--remote", help="Mint through the API (needs an admin token) instead of "
                                      "the local database.")] = False,
                 as_json: JsonOpt = False) -> None:
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

    settings = _settings()
    run_migrations(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            row, plaintext = create_token_row(session, name, project, admin)
            info = {"id": row.id, "name": name, "project": project, "admin": admin,
                    "token": plaintext}
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
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "name", "project", "admin", "job", "created", "revoked"):
        table.add_column(col)
    for t in rows or []:
        table.add_row(str(t.get("id")), escape(str(t.get("name"))), escape(str(t.get("project"))),
                      "yes" if t.get("is_admin", t.get("admin")) else "",
                      str(t["job_id"]) if t.get("job_id") is not None else "",
                      human_age(t.get("created_at")),
                      f"{human_age(t['revoked_at'])} ago" if t.get("revoked_at") else "")
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
    if as_json:
        print_json(data)
    else:
        for k, v in data.items():
            console.print(f"[bold]{escape(str(k))}[/] {escape(str(v))}")


# -- submitting ------------------------------------------------------------------------------

def _load_mapping_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CliError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected an object at the top level")
    return data


def resolve_space(space: str | None) -> str | dict[str, Any] | None:
    """A preset name stays a name; a JSON/YAML file becomes the space object (checked here)."""
    if space is None:
        return None
    p = Path(space)
    if p.suffix.lower() in (".json", ".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise CliError(f"space file not found: {space}")
        desc = _load_mapping_file(p)
        from densenas_core.spaces import space_from_dict

        space_from_dict(desc)  # fail here, with the field name, rather than after submitting
        return desc
    return space


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


def _dataset(name: str | None, root: str | None, limit_train: int | None,
             limit_val: int | None, num_classes: int | None,
             input_size: int | None) -> dict[str, Any] | None:
    ds: dict[str, Any] = {}
    for k, v in (("name", name), ("root", root), ("limit_train", limit_train),
                 ("limit_val", limit_val), ("num_classes", num_classes),
                 ("input_size", input_size)):
        _put(ds, k, v)
    return ds or None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _submit(ctx: typer.Context, kind: str, spec: dict[str, Any], *, priority: int,
            idempotency_key: str | None, watch: bool, as_json: bool,
            max_attempts: int | None = None, project: str | None = None) -> None:
    with client_from(ctx) as c:
        job = c.create_job(kind, spec, priority=priority, idempotency_key=idempotency_key,
                           max_attempts=max_attempts, project=project)
        if not watch:
            if as_json:
                print_json(job)
            else:
                console.print(f"submitted {kind} job [bold]{job['id']}[/] "
                              f"({_status(job['status'])})"
                              f" — follow it with: densenas watch {job['id']}")
            return
        if not as_json:
            console.print(f"submitted {kind} job [bold]{job['id']}[/]")
        final = JobWatcher(c, job, json_lines=as_json).run()
        finish_watch(c, final, as_json)


SpecFileOpt = Annotated[Path | None, typer.Option(
    "--spec", help="Base spec from a JSON/YAML file; flags override its fields.")]
PriorityOpt = Annotated[int, typer.Option(help="Higher runs first.")]
IdemOpt = Annotated[str | None, typer.Option(
    "--idempotency-key", help="Re-submitting with the same key returns the same job.")]
WatchOpt = Annotated[bool, typer.Option("--watch", help="Follow the job live until it ends.")]
MaxAttemptsOpt = Annotated[int | None, typer.Option(
    "--max-attempts", help="Attempts before the job fails for good (default: server's).")]
ProjectOpt = Annotated[str | None, typer.Option(
    "--project", help="Create in this project (admin tokens only).")]


@submit_app.command("search")
@cli_errors
def submit_search(
    ctx: typer.Context,
    space: Annotated[str | None, typer.Option(
        help="Preset (mbv2-small, mbv2-imagenet, resnet-small, resnet-imagenet) or a JSON/YAML "
             "space file.")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="fashion-mnist | cifar10 | imagefolder | synthetic.")] = None,
    dataset_root: Annotated[str | None, typer.Option(help="Dataset directory.")] = None,
    limit_train: Annotated[int | None, typer.Option(help="Use at most N training images.")] = None,
    limit_val: Annotated[int | None, typer.Option(help="Use at most N validation images.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Seeded random class subset.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Resize images to N×N.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Total epochs.")] = None,
    warmup_epochs: Annotated[int | None, typer.Option(
        help="First epochs train weights only.")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(
        help="scaled (default: lrs scaled to the batch and the arch steps, entangled op "
             "weights) | paper (the paper's settings).")] = None,
    w_lr: Annotated[float | None, typer.Option(
        help="Weight learning rate (default: from --schedule).")] = None,
    a_lr: Annotated[float | None, typer.Option(
        help="Architecture learning rate (default: from --schedule).")] = None,
    cost_metric: Annotated[str | None, typer.Option(help="flops | latency.")] = None,
    cost_mode: Annotated[str | None, typer.Option(help="Cost term form (e.g. log).")] = None,
    lam: Annotated[float | None, typer.Option(help="Cost weight λ.")] = None,
    tau: Annotated[float | None, typer.Option(help="Cost normaliser τ.")] = None,
    target: Annotated[float | None, typer.Option(
        help="Cost budget (ms for latency, M mult-adds for flops).")] = None,
    latency_table: Annotated[int | None, typer.Option(
        help="Latency table id (for --cost-metric latency).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers.")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--no-gpu", help="Use GPUs.")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints.")] = None,
    spec_file: SpecFileOpt = None,
    priority: PriorityOpt = 0,
    idempotency_key: IdemOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    project: ProjectOpt = None,
    watch: WatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Submit a DenseNAS search."""
    spec = build_search_spec(
        space=space, dataset=dataset, dataset_root=dataset_root, limit_train=limit_train,
        limit_val=limit_val, num_classes=num_classes, input_size=input_size, epochs=epochs,
        warmup_epochs=warmup_epochs, batch_size=batch_size, seed=seed, w_lr=w_lr, a_lr=a_lr,
        schedule=schedule, cost_metric=cost_metric, cost_mode=cost_mode, lam=lam, tau=tau,
        target=target,
        latency_table=latency_table, workers=workers, gpu=gpu,
        checkpoint_every=checkpoint_every,
        base=_load_mapping_file(spec_file) if spec_file else None)
    _submit(ctx, "search", spec, priority=priority, idempotency_key=idempotency_key,
            watch=watch, as_json=as_json, max_attempts=max_attempts, project=project)


def build_search_spec(*, space: str | None = None, dataset: str | None = None,
                      dataset_root: str | None = None, limit_train: int | None = None,
                      limit_val: int | None = None, num_classes: int | None = None,
                      input_size: int | None = None, epochs: int | None = None,
                      warmup_epochs: int | None = None, batch_size: int | None = None,
                      seed: int | None = None, w_lr: float | None = None,
                      a_lr: float | None = None, schedule: str | None = None,
                      cost_metric: str | None = None,
                      cost_mode: str | None = None, lam: float | None = None,
                      tau: float | None = None, target: float | None = None,
                      latency_table: int | None = None, workers: int | None = None,
                      gpu: bool | None = None, checkpoint_every: int | None = None,
                      base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The search spec from CLI flags: only what was given, so the server's defaults apply."""
    spec: dict[str, Any] = {}
    _put(spec, "space", resolve_space(space))
    _put(spec, "dataset", _dataset(dataset, dataset_root, limit_train, limit_val, num_classes,
                                   input_size))
    for k, v in (("epochs", epochs), ("warmup_epochs", warmup_epochs),
                 ("batch_size", batch_size), ("seed", seed), ("schedule", schedule),
                 ("w_lr", w_lr), ("a_lr", a_lr), ("num_workers", workers), ("use_gpu", gpu),
                 ("checkpoint_every", checkpoint_every)):
        _put(spec, k, v)
    cost: dict[str, Any] = {}
    for k, v in (("metric", cost_metric), ("mode", cost_mode), ("lam", lam), ("tau", tau),
                 ("target", target), ("latency_table_id", latency_table)):
        _put(cost, k, v)
    if latency_table is not None and cost_metric is None:
        cost["metric"] = "latency"
    if cost:
        spec["cost"] = cost
    return _merge(dict(base or {}), spec)


@submit_app.command("retrain")
@cli_errors
def submit_retrain(
    ctx: typer.Context,
    arch_id: Annotated[int, typer.Argument(help="Architecture id to retrain.")],
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (cosine).")] = None,
    lr_min: Annotated[float | None, typer.Option()] = None,
    label_smoothing: Annotated[float | None, typer.Option()] = None,
    nodes: Annotated[int | None, typer.Option(help="Ray nodes (num_nodes).")] = None,
    workers_per_node: Annotated[int | None, typer.Option()] = None,
    gpus_per_worker: Annotated[float | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    dataset_root: Annotated[str | None, typer.Option()] = None,
    limit_train: Annotated[int | None, typer.Option()] = None,
    limit_val: Annotated[int | None, typer.Option()] = None,
    num_classes: Annotated[int | None, typer.Option()] = None,
    input_size: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    spec_file: SpecFileOpt = None,
    priority: PriorityOpt = 0,
    idempotency_key: IdemOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    project: ProjectOpt = None,
    watch: WatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Retrain a derived architecture from scratch (multi-node with --nodes)."""
    spec: dict[str, Any] = {"architecture_id": arch_id}
    _put(spec, "dataset", _dataset(dataset, dataset_root, limit_train, limit_val, num_classes,
                                   input_size))
    for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("lr_min", lr_min),
                 ("label_smoothing", label_smoothing), ("num_nodes", nodes),
                 ("workers_per_node", workers_per_node), ("gpus_per_worker", gpus_per_worker),
                 ("seed", seed)):
        _put(spec, k, v)
    if gpus_per_worker is not None and float(gpus_per_worker).is_integer():
        spec["gpus_per_worker"] = int(gpus_per_worker)
    spec = _merge(_load_mapping_file(spec_file) if spec_file else {}, spec)
    _submit(ctx, "retrain", spec, priority=priority, idempotency_key=idempotency_key,
            watch=watch, as_json=as_json, max_attempts=max_attempts, project=project)


@submit_app.command("profile")
@cli_errors
def submit_profile(
    ctx: typer.Context,
    space: Annotated[str | None, typer.Option(help="Preset or a JSON/YAML space file.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda.")] = None,
    gpu_type: Annotated[str | None, typer.Option(help="e.g. A100 (Ray accelerator type).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size to time at.")] = None,
    input_size: Annotated[int | None, typer.Option()] = None,
    warmup: Annotated[int | None, typer.Option(help="Discarded warm-up runs.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed runs per op.")] = None,
    spec_file: SpecFileOpt = None,
    priority: PriorityOpt = 0,
    idempotency_key: IdemOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    project: ProjectOpt = None,
    watch: WatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure a latency lookup table for every candidate op of a space on a worker device."""
    spec: dict[str, Any] = {}
    _put(spec, "space", resolve_space(space))
    dev: dict[str, Any] = {}
    _put(dev, "device", device)
    _put(dev, "gpu_type", gpu_type)
    if dev:
        spec["device"] = dev
    for k, v in (("batch_size", batch), ("input_size", input_size), ("warmup", warmup),
                 ("repeats", repeats)):
        _put(spec, k, v)
    spec = _merge(_load_mapping_file(spec_file) if spec_file else {}, spec)
    _submit(ctx, "profile", spec, priority=priority, idempotency_key=idempotency_key,
            watch=watch, as_json=as_json, max_attempts=max_attempts, project=project)


# -- jobs ------------------------------------------------------------------------------------

@app.command()
@cli_errors
def jobs(ctx: typer.Context,
         status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed|"
                                                         "cancelled")] = None,
         kind: Annotated[str | None, typer.Option(help="search|retrain|profile")] = None,
         project: Annotated[str | None, typer.Option()] = None,
         limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
         cursor: Annotated[str | None, typer.Option(help="next_cursor of a previous page")] = None,
         as_json: JsonOpt = False) -> None:
    """List jobs, newest first."""
    with client_from(ctx) as c:
        page = c.list_jobs(status=status, kind=kind, project=project, limit=limit, cursor=cursor)
    if as_json:
        print_json(page)
        return
    data = page.get("data", [])
    if not data:
        console.print("no jobs")
    else:
        console.print(job_table(data))
    if page.get("next_cursor"):
        console.print(f"[dim]more: densenas jobs --cursor {page['next_cursor']}[/]")


@app.command()
@cli_errors
def job(ctx: typer.Context, job_id: int, as_json: JsonOpt = False) -> None:
    """Details of one job."""
    with client_from(ctx) as c:
        data = c.get_job(job_id)
    if as_json:
        print_json(data)
    else:
        print_job(data)


@app.command()
@cli_errors
def watch(ctx: typer.Context, job_id: int,
          as_json: Annotated[bool, typer.Option(
              "--json", help="Print events as JSON lines, then the final job.")] = False) -> None:
    """Follow a job live until it ends; exit 1 if it failed or was cancelled."""
    with client_from(ctx) as c:
        job_doc = c.get_job(job_id)
        final = JobWatcher(c, job_doc, json_lines=as_json).run()
        finish_watch(c, final, as_json)


def _transition(job_id: int, data: dict[str, Any], as_json: bool, note: str) -> None:
    """The answer to cancel / retry: the job as JSON, or its new status and ``note``."""
    if as_json:
        print_json(data)
    else:
        console.print(f"job {job_id}: {_status(data.get('status'))}{note}")


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
    _transition(job_id, data, as_json,
                f" (attempt {data.get('attempt')}/{data.get('max_attempts')})")


def parse_count(text: str) -> int:
    """``300M``, ``1.5G``, ``250k`` or a plain number; a bare number under 100 000 means
    millions (``--max-mult-adds 300`` is 300 M: no real network has fewer mult-adds)."""
    t = text.strip().replace("_", "").replace(",", "")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}.get(t[-1:].lower(), None)
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise CliError(f"not a count: {text!r} (use e.g. 300M, 1.5G or 300000000)") from None
    if scale is None:
        scale = 1e6 if value < 1e5 else 1.0
    if value <= 0:
        raise CliError(f"not a positive count: {text!r}")
    return int(round(value * scale))


@app.command()
@cli_errors
def derive(ctx: typer.Context, job_id: int,
           max_mult_adds: Annotated[str | None, typer.Option(
               help="FLOPs budget: 300M, 1.5G, or a number (under 100000 means millions).")]
           = None,
           max_latency_ms: Annotated[float | None, typer.Option(
               help="Latency budget in ms (needs --latency-table).")] = None,
           target: Annotated[str | None, typer.Option(
               help="Budget in the metric's unit: ms with --latency-table, else mult-adds.")]
           = None,
           latency_table: Annotated[int | None, typer.Option(
               help="Latency table that predicts the latency.")] = None,
           top_k: Annotated[int | None, typer.Option(
               help="Most probable block paths considered (k-best Viterbi).")] = None,
           name: Annotated[str | None, typer.Option(help="Name of the new architecture.")]
           = None,
           as_json: JsonOpt = False) -> None:
    """Derive another architecture from a finished search under a budget."""
    cost: dict[str, Any] = {}
    if target is not None:
        if latency_table is not None:
            try:
                cost["max_latency_ms"] = float(target)
            except ValueError:
                raise CliError(f"--target: not a latency in ms: {target!r}") from None
        else:
            cost["max_mult_adds"] = parse_count(target)
    if max_mult_adds is not None:
        cost["max_mult_adds"] = parse_count(max_mult_adds)
    _put(cost, "max_latency_ms", max_latency_ms)
    _put(cost, "latency_table_id", latency_table)
    _put(cost, "top_k", top_k)
    with client_from(ctx) as c:
        arch = c.derive(job_id, cost, name=name)
    if as_json:
        print_json(arch)
    else:
        print_architecture(arch)


# -- architectures ---------------------------------------------------------------------------

@arch_app.command("list")
@cli_errors
def arch_list(ctx: typer.Context,
              space: Annotated[str | None, typer.Option()] = None,
              max_mult_adds: Annotated[float | None, typer.Option()] = None,
              max_latency_ms: Annotated[float | None, typer.Option()] = None,
              latency_table: Annotated[int | None, typer.Option()] = None,
              min_accuracy: Annotated[float | None, typer.Option()] = None,
              pareto: Annotated[str | None, typer.Option(
                  help="e.g. latency,accuracy: only the Pareto front.")] = None,
              limit: Annotated[int | None, typer.Option()] = None,
              as_json: JsonOpt = False) -> None:
    """List derived architectures."""
    with client_from(ctx) as c:
        page = c.list_architectures(space=space, max_mult_adds=max_mult_adds,
                                    max_latency_ms=max_latency_ms,
                                    latency_table_id=latency_table, min_accuracy=min_accuracy,
                                    pareto=pareto, limit=limit)
    if as_json:
        print_json(page)
        return
    rows = page.get("data", []) if isinstance(page, Mapping) else page
    if not rows:
        console.print("no architectures")
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "name", "space", "mult-adds", "params", "accuracy", "latency", "job", "age"):
        table.add_column(col, justify="right" if col in ("id", "mult-adds", "params", "accuracy",
                                                          "job") else "left")
    for a in rows:
        lat = a.get("predicted_latency") or a.get("latency_ms")
        lat_txt = "-"
        if isinstance(lat, (int, float)):
            lat_txt = f"{lat:.2f} ms"
        elif isinstance(lat, Mapping) and lat:
            lat_txt = _fmt_latency(next(iter(lat.values())))
        table.add_row(str(a.get("id")), escape(str(a.get("name") or "-")),
                      escape(str(a.get("space") or "-")), _fmt_millions(a.get("mult_adds")),
                      _fmt_millions(a.get("params")),
                      _fmt_acc(a.get("accuracy_top1", a.get("accuracy"))), lat_txt,
                      str(a.get("job_id") if a.get("job_id") is not None else "-"),
                      human_age(a.get("created_at")))
    console.print(table)


@arch_app.command("show")
@cli_errors
def arch_show(ctx: typer.Context, arch_id: int, as_json: JsonOpt = False) -> None:
    """Block table, mult-adds, params, accuracy and latencies of one architecture."""
    with client_from(ctx) as c:
        arch = c.get_architecture(arch_id)
    if as_json:
        print_json(arch)
    else:
        print_architecture(arch)


@arch_app.command("export")
@cli_errors
def arch_export(ctx: typer.Context, arch_id: int,
                format: Annotated[str, typer.Option("--format", "-f",
                                                    help="json | onnx")] = "json",
                output: Annotated[Path | None, typer.Option(
                    "--output", "-o", help="File to write (default arch-<id>.<format>).")] = None,
                ) -> None:
    """Download an architecture as its JSON document or an ONNX model."""
    if format not in ("json", "onnx"):
        raise CliError("--format: expected json or onnx")
    out = output or Path(f"arch-{arch_id}.{format}")
    with client_from(ctx) as c:
        data = c.download_architecture(arch_id, format)
    out.write_bytes(data)
    err_console.print(f"wrote {out} ({len(data)} bytes)")


@arch_app.command("flops")
@cli_errors
def arch_flops(arch: Annotated[str, typer.Argument(
                   help="Preset (densenas-c, densenas-r1..r3) or an architecture JSON file.")],
               input: Annotated[int | None, typer.Option(
                   "--input", help="Input resolution (default the architecture's).")] = None,
               classes: Annotated[int | None, typer.Option(
                   "--classes", help="Classifier outputs (default the architecture's).")] = None,
               as_json: JsonOpt = False) -> None:
    """Mult-adds and parameters of an architecture, computed locally (no server)."""
    from densenas_core.arch import arch_summary, get_arch

    a = get_arch(arch)
    summary = arch_summary(a, input_size=input, num_classes=classes)
    if as_json:
        print_json({"name": summary.get("name") or arch, "input_size": summary["input_size"],
                    "num_classes": summary["num_classes"], "mult_adds": summary["mult_adds"],
                    "mult_adds_m": round(summary["mult_adds"] / 1e6, 3),
                    "params": summary["params"], "params_m": round(summary["params"] / 1e6, 3),
                    "depth": summary.get("depth"), "blocks": summary.get("blocks", [])})
        return
    print_arch_doc(a.to_dict(), summary,
                   title=f"{summary.get('name') or arch} at {summary['input_size']}px, "
                         f"{summary['num_classes']} classes")


# -- spaces ----------------------------------------------------------------------------------

@space_app.command("show")
@cli_errors
def space_show(name: Annotated[str, typer.Argument(help="Preset name or a JSON/YAML file.")],
               input: Annotated[int | None, typer.Option(
                   "--input", help="Input resolution for the size column.")] = None,
               as_json: JsonOpt = False) -> None:
    """Summary counts and block table of a search space (local, no server)."""
    from densenas_core.spaces import get_space, load_space_file

    p = Path(name)
    space = load_space_file(p) if p.suffix.lower() in (".json", ".yaml", ".yml") or p.is_file() \
        else get_space(name)
    summary = space.summary()
    blocks = space.block_table(input)
    if as_json:
        print_json({"name": space.name, "family": space.family,
                    "input_size": input or space.input_size, "summary": summary,
                    "align_ops": list(space.align_ops), "layer_ops": list(space.layer_ops),
                    "blocks": [dict(b, inputs=[list(x) for x in b["inputs"]]) for b in blocks]})
        return
    console.print(f"[bold]{escape(space.name)}[/] ({space.family}, "
                  f"{input or space.input_size}px input)")
    console.print(
        f"{summary['routing_blocks']} routing blocks, {summary['paths']} paths, "
        f"{summary['alignment_branches']} alignment branches × {summary['alignment_ops']} ops, "
        f"{summary['basic_layers']} basic layers × {summary['layer_ops']} ops, "
        f"{summary['block_paths']:,} block paths")
    console.print(f"alignment ops: {', '.join(space.align_ops)}")
    console.print(f"layer ops: {', '.join(space.layer_ops)}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("block", "kind", "ch", "size", "stage", "layers", "inputs (block, stride)"):
        table.add_column(col, justify="right" if col in ("block", "ch", "size", "stage",
                                                          "layers") else "left")
    for b in blocks:
        inputs = " ".join(f"({s},{st})" for s, st in b["inputs"]) or "–"
        layers = "–" if b["kind"] != "routing" else str(b["basic_layers"])
        table.add_row(str(b["block"]), b["kind"], str(b["channels"]), str(b["size"]),
                      str(b["stage"]), layers, inputs)
    console.print(table)


@space_app.command("list")
@cli_errors
def space_list(as_json: JsonOpt = False) -> None:
    """The preset search spaces."""
    from densenas_core.spaces import SPACE_NAMES, get_space

    rows = [{"name": n, "family": get_space(n).family, "input_size": get_space(n).input_size,
             **get_space(n).summary()} for n in SPACE_NAMES]
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("name", "family", "input", "blocks", "paths", "layers", "block paths"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["family"], str(r["input_size"]), str(r["routing_blocks"]),
                      str(r["paths"]), str(r["basic_layers"]), f"{r['block_paths']:,}")
    console.print(table)


# -- latency tables --------------------------------------------------------------------------

@app.command()
@cli_errors
def tables(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Latency lookup tables measured by profile jobs."""
    with client_from(ctx) as c:
        page = c.list_latency_tables()
    if as_json:
        print_json(page)
        return
    rows = page.get("data", []) if isinstance(page, Mapping) else page
    if not rows:
        console.print("no latency tables (measure one: densenas submit profile --space ...)")
        return
    table = Table(show_edge=False, header_style="bold")
    for col in ("id", "device", "space", "batch", "input", "dtype", "method", "entries", "job",
                "age"):
        table.add_column(col, justify="right" if col in ("id", "batch", "input", "entries",
                                                          "job") else "left")
    for t in rows:
        device = t.get("device_name") or t.get("device") or "-"
        if t.get("device_kind") and t.get("device_kind") not in str(device):
            device = f"{t['device_kind']} {device}"
        table.add_row(str(t.get("id")), escape(str(device)), escape(str(t.get("space") or "-")),
                      str(t.get("batch", "-")), str(t.get("input_size") or "-"),
                      escape(str(t.get("dtype") or "-")), escape(str(t.get("method") or "-")),
                      str(t.get("entry_count", "-")),
                      str(t.get("job_id") if t.get("job_id") is not None else "-"),
                      human_age(t.get("created_at")))
    console.print(table)


# -- demo: the whole system on one machine ---------------------------------------------------

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
    config = uvicorn.Config(fastapi_app, host=settings.host, port=settings.port,
                            log_level="warning", lifespan="on", access_log=False,
                            timeout_graceful_shutdown=5)
    server = Server(config, fastapi_app)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            server.run()
        except BaseException as e:  # surfaced below instead of dying silently in the thread
            errors.append(e)

    thread = threading.Thread(target=target, name="densenas-control-plane", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if errors or not thread.is_alive():
            raise CliError("the control plane failed to start"
                           + (f": {errors[0]}" if errors else " (see the log above)"))
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
def demo(space: Annotated[str, typer.Option(help="Search space preset or file.")] = "mbv2-small",
         dataset: Annotated[str, typer.Option(help="fashion-mnist | synthetic | ...")] =
         "fashion-mnist",
         limit_train: Annotated[int, typer.Option(help="Training images used.")] = 6000,
         limit_val: Annotated[int, typer.Option(help="Validation images used.")] = 1000,
         epochs: Annotated[int, typer.Option()] = 3,
         warmup_epochs: Annotated[int, typer.Option()] = 1,
         batch_size: Annotated[int, typer.Option()] = 64,
         seed: Annotated[int, typer.Option()] = 0,
         executor: Annotated[str, typer.Option(
             help="ray (local Ray started in-process) | inline (a thread, no Ray)")] = "ray",
         database_url: Annotated[str | None, typer.Option(
             help="Default: the SQLite file ./.densenas/demo.db.")] = None,
         data_dir: Annotated[Path, typer.Option(
             help="The demo server's admin token and checkpoints (kept apart from the "
                  "`densenas serve` default ./.densenas).")] = Path(".densenas/demo"),
         port: Annotated[int | None, typer.Option(help="Default: a free port.")] = None,
         verbose: Annotated[bool, typer.Option(
             "--verbose", "-v", help="Keep Ray's start-up log lines.")] = False,
         as_json: Annotated[bool, typer.Option(
             "--json", help="Print the final job (and architecture) as JSON.")] = False,
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
    settings = _settings(database_url=url, host=host, port=port, executor=executor,
                         data_dir=data_dir, public_url=f"http://{host}:{port}")
    spec = build_search_spec(space=space, dataset=dataset, limit_train=limit_train,
                             limit_val=limit_val, epochs=epochs, warmup_epochs=warmup_epochs,
                             batch_size=batch_size, seed=seed)
    say = err_console.print if as_json else console.print
    say(f"[bold]DenseNAS demo[/]: control plane on http://{host}:{port} "
        f"(database {escape(_redact(url))}, executor {executor})")
    with run_control_plane(settings) as base_url:
        token = _bootstrap_token(settings)
        with DenseNASClient(base_url, token, timeout=60.0) as c:
            job_doc = c.create_job("search", spec)
            say(f"submitted search job [bold]{job_doc['id']}[/]: {space} on {dataset} "
                f"({limit_train} train / {limit_val} val images, {epochs} epochs, "
                f"{warmup_epochs} warm-up) — dashboard: {base_url}/")
            if as_json:
                final = _wait_quietly(c, int(job_doc["id"]))
                out: dict[str, Any] = {"job": final}
                ids = _produced_arch_ids(final)
                if ids:
                    out["architecture"] = c.get_architecture(ids[0])
                print_json(out)
                if final.get("status") != "succeeded":
                    raise typer.Exit(1)
                return
            final = JobWatcher(c, job_doc).run()
            finish_watch(c, final, as_json=False)
    console.print(f"[green]demo finished.[/] The job and its architecture stay in "
                  f"{escape(_redact(url))}; browse them with\n"
                  f"  DENSENAS_DATABASE_URL={escape(url)} DENSENAS_DATA_DIR={escape(str(data_dir))}"
                  " densenas serve")


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


if __name__ == "__main__":  # pragma: no cover
    app()

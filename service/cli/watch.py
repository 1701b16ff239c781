"""The live progress view of a job (``watch``, ``submit --watch``, ``demo``) and the outcome
printed once the job has ended."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column

from service.client import TERMINAL_STATUSES, ApiError, DenseNASClient, SseEvent

from .common import console, err_console
from .format import (
    STATUS_STYLE,
    epochs_done,
    fmt_acc,
    fmt_metric,
    local_summary,
    metrics_text,
    print_arch_doc,
    print_architecture,
    status_text,
    total_epochs,
)


class JobWatcher:
    """Renders a job's event stream as a rich progress bar until the job ends.

    An epoch bar is driven by ``epoch`` events; ``step`` events update a per-epoch step bar
    when the loop reports its step count, and the running loss/acc/expected cost either way.
    ``log`` events and status changes are printed above the bars.
    """

    def __init__(
        self,
        client: DenseNASClient,
        job: Mapping[str, Any],
        *,
        out: Console | None = None,
        json_lines: bool = False,
    ) -> None:
        self.client = client
        self.job = dict(job)
        self.job_id = int(job["id"])
        self.out = out or console
        self.json_lines = json_lines
        self.total_epochs = total_epochs(job)
        self.metrics: dict[str, Any] = {}
        self.last_status = job.get("status")
        self.events_seen = 0
        self.steps_total: int | None = 0
        self.cost_unit = ""

    # rendering
    def _metrics_text(self) -> str:
        m = self.metrics
        parts = []
        if m.get("phase"):
            parts.append(f"[cyan]{m['phase']}[/]")
        for key, label in (
            ("loss", "loss"),
            ("acc", "acc"),
            ("val_loss", "val_loss"),
            ("val_acc", "val_acc"),
            ("top1", "top1"),
            ("expected_cost", "cost"),
        ):
            v = m.get(key)
            if v is None:
                continue
            text = fmt_metric(key, v, self.cost_unit)
            parts.append(f"{label} {escape(text)}")
        return " ".join(parts)

    def run(self) -> dict[str, Any]:
        """Follow the job until it is terminal; returns the final job document."""
        if self.json_lines:
            return self._run_json()
        if self.job.get("status") in TERMINAL_STATUSES:
            self._replay_quietly()
            return self.client.get_job(self.job_id)
        # The job, its counts and the elapsed time are never cut; the metrics fold onto more
        # lines when the terminal is narrow (they squeezed the others to "job 1 sea…" and
        # hid the bar and elapsed time at 80 columns).
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[metrics]}", table_column=Column(overflow="fold", ratio=1)),
            console=self.out,
            transient=False,
            refresh_per_second=4,
        )
        with progress:
            epoch_task = progress.add_task(
                f"job {self.job_id} {self.job.get('kind')} epochs",
                total=self.total_epochs,
                metrics=f"[{STATUS_STYLE.get(str(self.last_status), 'white')}]"
                f"{self.last_status}[/]",
            )
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
            sys.stdout.write(
                json.dumps({"id": ev.id, "type": ev.type, "data": ev.payload}, default=str) + "\n"
            )
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

    def _apply(
        self, ev: SseEvent, progress: Progress, epoch_task: TaskID, step_task: TaskID | None
    ) -> TaskID | None:
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
                progress.update(
                    epoch_task,
                    description=f"job {self.job_id} "
                    f"{self.job.get('kind')} epoch {data['epoch'] + 1}",
                )
        elif kind == "epoch":
            self.metrics.update(_metric_fields(data))
            done = epochs_done(data)
            progress.update(epoch_task, completed=done)
            if isinstance(data.get("steps"), int) and data["steps"] > 0:
                self.steps_total = data["steps"]
            if data.get("cost_unit"):
                self.cost_unit = str(data["cost_unit"])
            if step_task is not None:  # the next step event starts it again
                progress.update(
                    step_task, total=self.steps_total or None, completed=self.steps_total or 0
                )
            self.out.print(f"  epoch {done}/{self.total_epochs or '?'}  " + _epoch_line(data))
            search_line = _search_progress_line(data)
            if search_line:
                self.out.print(f"    {search_line}")
        elif kind in ("status", "transition", "job"):
            status = data.get("status", data.get("to"))
            if status and status != self.last_status:
                self.last_status = status
                note = f" ({escape(str(data['error']))})" if data.get("error") else ""
                self.out.print(f"  status → {status_text(status)}{note}")
        elif kind == "log":
            msg = data.get("message") if isinstance(data, Mapping) else ev.payload
            self.out.print(f"  [dim]{escape(str(msg))}[/]")
        elif kind in ("progress", "profile"):
            p_done, p_total = data.get("done"), data.get("total")
            if isinstance(p_done, int) and isinstance(p_total, int):
                progress.update(epoch_task, total=p_total, completed=p_done)
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
            text = fmt_metric(key, v, data.get("cost_unit"))
            parts.append(f"{key} {escape(text)}")
    return "  ".join(parts)


def _fmt_fixed3(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


#: A search epoch's progress figures (densenas_core.search): field, label, format.
_SEARCH_PROGRESS = (
    ("val_acc", "val acc argmax net", fmt_acc),
    ("derived_val_acc", "derived single-path", fmt_acc),
    ("supernet_val_acc", "supernet (sampled)", fmt_acc),
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
    return " · ".join(
        f"{label} {fmt(data[key])}"
        for key, label, fmt in _SEARCH_PROGRESS
        if data.get(key) is not None
    )


def finish_watch(client: DenseNASClient, job: Mapping[str, Any], as_json: bool) -> None:
    """After a job ended: print its outcome (and the derived architecture); exit 1 unless it
    succeeded."""
    status = job.get("status")
    if not as_json:
        if status == "succeeded":
            console.print(f"job {job['id']} {status_text(status)}")
            if job.get("kind") == "search":
                show_search_result(client, job)
            elif job.get("kind") == "retrain":
                metrics = (job.get("result") or {}).get("metrics") or {}
                console.print(metrics_text(metrics))
            elif job.get("kind") == "profile":
                produced = job.get("produced") or {}
                console.print(f"latency table: {escape(json.dumps(produced))}")
        else:
            err_console.print(
                f"[bold red]job {job['id']} {status}[/]"
                + (f"[red]: {escape(str(job['error']))}[/]" if job.get("error") else "")
            )
    if status != "succeeded":
        raise typer.Exit(1)


def produced_arch_ids(job: Mapping[str, Any]) -> list[int]:
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
    if (
        not ids
        and isinstance(result, Mapping)
        and result.get("architecture_id") is not None
        and job.get("kind") == "search"
    ):
        ids.append(result["architecture_id"])
    return [int(i) for i in ids if isinstance(i, int) or (isinstance(i, str) and i.isdigit())]


def show_search_result(client: DenseNASClient, job: Mapping[str, Any]) -> None:
    ids = produced_arch_ids(job)
    if ids:
        arch = client.get_architecture(ids[0])
        print_architecture(arch)
        return
    doc = (job.get("result") or {}).get("architecture")
    if isinstance(doc, Mapping):
        print_arch_doc(doc, local_summary(doc), title="derived architecture")

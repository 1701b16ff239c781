"""The jobs table's progress cell reads ``job.progress`` as the server keeps it: the latest
event of each type under its type (service/jobs/events.py), an epoch event's ``epoch`` the
0-based index of the epoch it ends (densenas_core.search / retrain)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import service.cli as cli
import service.cli.jobs as cli_jobs
from service.cli.format import epochs_done, format_progress
from service.client import DenseNASClient

runner = CliRunner()


def epoch_event(epoch: int, seq: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "phase": "search",
        "train_loss": 1.5,
        "train_acc": 0.5,
        "val_acc": 0.45,
        "global_step": seq // 4,
        "seq": seq,
    }


def step_event(epoch: int, step: int, seq: int) -> dict[str, Any]:
    return {"epoch": epoch, "step": step, "loss": 2.25, "acc": 0.25, "seq": seq}


def job(status: str, progress: dict[str, Any] | None, epochs: int = 3) -> dict[str, Any]:
    return {
        "id": 7,
        "kind": "search",
        "status": status,
        "project": "default",
        "priority": 0,
        "spec": {"epochs": epochs},
        "progress": progress,
        "created_at": "2026-01-01T00:00:00Z",
    }


def kept(*events: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """``progress`` as ingest_events leaves it: the last event of each type, plus the
    watchdog's step clock and the update time."""
    progress: dict[str, Any] = {"updated_at": "2026-01-01T00:01:00Z"}
    for kind, data in events:
        progress[kind] = data
    if "step" in progress:
        progress["pace"] = {"attempt": 1, "reports": 3, "steps": 9, "last": {"epoch": 2}}
    return progress


def test_succeeded_search_shows_its_last_epoch() -> None:
    done = job("succeeded", kept(("step", step_event(2, 2, 40)), ("epoch", epoch_event(2, 41))))
    assert format_progress(done) == "ep 3/3 loss 1.5 acc 45.0 %"


def test_running_job_shows_completed_epochs_and_latest_step() -> None:
    running = job("running", kept(("epoch", epoch_event(0, 13)), ("step", step_event(1, 1, 20))))
    assert format_progress(running) == "ep 1/3 loss 2.25 acc 25.0 %"
    first = job("running", kept(("step", step_event(0, 1, 4))))
    assert format_progress(first) == "ep 0/3 loss 2.25 acc 25.0 %"


def test_total_from_the_declared_default_and_flat_progress() -> None:
    from densenas_core.specs import SearchSpec

    no_epochs = dict(job("succeeded", kept(("epoch", epoch_event(3, 9)))), spec={})
    assert format_progress(no_epochs).startswith(f"ep 4/{SearchSpec.epochs} ")
    assert format_progress(job("running", {"epoch": 1, "train_loss": 0.5})) == "ep 2/3 loss 0.5"
    assert format_progress(job("queued", None)) == "-"
    assert format_progress(job("running", {"done": 5, "total": 9})) == "5/9"


def test_epochs_done() -> None:
    assert epochs_done({"epoch": 2}) == 3
    assert epochs_done({"epoch": 3, "epoch_base": 1}) == 3
    assert epochs_done({}) == 0


def test_jobs_command_shows_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    page = {
        "data": [
            job("succeeded", kept(("step", step_event(2, 2, 40)), ("epoch", epoch_event(2, 41))))
        ],
        "next_cursor": None,
    }

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=page)

    monkeypatch.setattr(
        cli_jobs,
        "client_from",
        lambda ctx: DenseNASClient("http://test", "t", transport=httpx.MockTransport(handler)),
    )
    r = runner.invoke(cli.app, ["jobs"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "ep 3/3" in r.stdout and "ep 0/3" not in r.stdout

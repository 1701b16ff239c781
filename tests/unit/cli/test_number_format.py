"""Results and progress are printed for a person: accuracies as percentages with one decimal,
losses to 3 significant digits, durations, sizes and counts with units (``--json`` keeps the
raw numbers)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import service.cli as cli
import service.cli.jobs as cli_jobs
from service.cli.format import (
    fmt_acc,
    fmt_bytes,
    fmt_loss,
    fmt_metric,
    fmt_seconds,
    metrics_text,
    retrain_text,
)
from service.client import DenseNASClient

runner = CliRunner()

RETRAIN_METRICS = {
    "top1": 0.13333333333333333,
    "top5": 0.5208333333333334,
    "loss": 2.2866124153137206,
    "train_loss": 2.301234,
    "train_acc": 0.109375,
    "best_top1": 0.13333333333333333,
    "epochs": 2,
    "global_steps": 46,
    "train_seconds": 3.2187,
    "wall_seconds": 191.4,
    "world_size": 1,
}


def test_figures() -> None:
    assert fmt_acc(0.13333333333333333) == "13.3 %"
    assert fmt_acc(71.5) == "71.5 %"  # already a percentage
    assert fmt_acc(None) == "-"
    assert fmt_loss(2.2866124153137206) == "2.29" and fmt_loss(0.041234) == "0.0412"
    assert fmt_seconds(3.2187) == "3.2 s" and fmt_seconds(191.4) == "3 min 11 s"
    assert fmt_seconds(7500) == "2 h 05 min"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(12.5 * 2**20) == "12.5 MiB"


def test_metric_by_name() -> None:
    assert fmt_metric("top1", 0.13333333333333333) == "13.3 %"
    assert fmt_metric("best_top1", 0.5) == "50.0 %"
    assert fmt_metric("supernet_val_acc", 0.381) == "38.1 %"
    assert fmt_metric("val_loss", 1.23456) == "1.23"
    assert fmt_metric("wall_seconds", 191.4) == "3 min 11 s"
    assert fmt_metric("checkpoint_bytes", 2048) == "2.0 KiB"
    assert fmt_metric("mult_adds", 360808256) == "360.81M"
    assert fmt_metric("params", 6134144) == "6.13M"
    assert fmt_metric("expected_cost", 12.3456, "M") == "12.35 M"
    assert fmt_metric("lr", 0.012345678) == "0.01235"
    assert fmt_metric("epochs", 2) == "2"
    assert fmt_metric("target", None) == "-"
    assert fmt_metric("schedule", {"name": "scaled"}) == '{"name": "scaled"}'
    assert fmt_metric("alpha_top_gap", 0.25) == "0.25"  # not an accuracy for having "top"


def test_metrics_text_and_retrain_row() -> None:
    text = metrics_text(RETRAIN_METRICS)
    assert "[bold]top1[/] 13.3 %" in text and "[bold]loss[/] 2.29" in text
    assert "0.1333" not in text
    assert metrics_text({"top1": 0.5, "history": [{"epoch": 0}]}) == "[bold]top1[/] 50.0 %"
    row = retrain_text({"job_id": 12, "status": "succeeded", "top1": 0.13333333333333333})
    assert row == "job 12 [green]succeeded[/]  [bold]top1[/] 13.3 %"


def retrain_job() -> dict[str, Any]:
    return {
        "id": 9,
        "kind": "retrain",
        "status": "succeeded",
        "project": "default",
        "priority": 0,
        "attempt": 1,
        "max_attempts": 3,
        "spec": {"architecture_id": 4, "epochs": 2},
        "progress": None,
        "error": None,
        "cancel_requested": False,
        "created_at": "2026-01-01T00:00:00Z",
        "result": {"metrics": RETRAIN_METRICS},
        "produced": {},
    }


@pytest.fixture
def serve_job(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/jobs/9/events":  # the job has ended: a replay, no stream
            return httpx.Response(200, json={"data": [], "next_cursor": None})
        if req.url.path == "/v1/jobs/9":
            return httpx.Response(200, json=retrain_job())
        return httpx.Response(404, json={"title": "Not Found", "status": 404})

    monkeypatch.setattr(
        cli_jobs,
        "client_from",
        lambda ctx: DenseNASClient("http://test", "t", transport=httpx.MockTransport(handler)),
    )


@pytest.mark.usefixtures("serve_job")
def test_watch_prints_a_retrain_result_formatted() -> None:
    r = runner.invoke(cli.app, ["watch", "9"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "top1 13.3 %" in r.stdout and "top5 52.1 %" in r.stdout
    assert "loss 2.29" in r.stdout and "wall_seconds 3 min 11 s" in r.stdout
    assert "0.1333" not in r.stdout


@pytest.mark.usefixtures("serve_job")
def test_job_prints_metrics_formatted_and_json_keeps_them_raw() -> None:
    r = runner.invoke(cli.app, ["job", "9"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = [" ".join(line.split()) for line in r.stdout.splitlines()]
    assert "top1 13.3 %" in lines and "train_loss 2.3" in lines and "train_seconds 3.2 s" in lines
    assert "0.1333" not in r.stdout
    r = runner.invoke(cli.app, ["job", "9", "--json"])
    assert "0.13333333333333333" in r.stdout

"""The live view and result printing of `watch`, against a scripted transport (no server)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import service.cli as cli
import service.cli.jobs as cli_jobs
from service.client import DenseNASClient

runner = CliRunner()


def sse(events: list[tuple[int, str, dict[str, Any]]]) -> str:
    out = []
    for i, (eid, etype, data) in enumerate(events):
        row = {
            "id": eid,
            "job_id": 1,
            "seq": i,
            "type": etype,
            "data": data,
            "created_at": "2026-01-01T00:00:00Z",
        }
        out.append(f"id: {eid}\nevent: {etype}\ndata: {json.dumps(row)}\n\n")
    return "".join(out)


def scripted(
    final_status: str,
    *,
    error: str | None = None,
    epoch_extra: Callable[[int], dict[str, Any]] | None = None,
):
    """A job's stream of two epochs; ``epoch_extra(epoch)`` adds fields to its epoch events."""
    from densenas_core.arch import ARCH_PRESETS

    doc = ARCH_PRESETS["densenas-c"].to_dict()
    events = [(1, "status", {"from": "queued", "to": "running", "attempt": 1})]
    eid = 2
    for epoch in range(2):
        for step in range(3):
            events.append(
                (
                    eid,
                    "step",
                    {
                        "phase": "weights",
                        "epoch": epoch,
                        "step": step,
                        "steps_per_epoch": 3,
                        "loss": 2.0 - 0.1 * step,
                        "acc": 0.2 + 0.1 * step,
                        "expected_cost": 12.5,
                    },
                )
            )
            eid += 1
        events.append(
            (
                eid,
                "epoch",
                {
                    "epoch": epoch,
                    "train_loss": 1.5,
                    "train_acc": 0.5,
                    "val_loss": 1.6,
                    "val_acc": 0.45,
                    "expected_cost": 12.0,
                    **(epoch_extra(epoch) if epoch_extra else {}),
                },
            )
        )
        eid += 1
    events.append((eid, "status", {"from": "running", "to": final_status, "attempt": 1}))
    job = {
        "id": 1,
        "kind": "search",
        "status": "running",
        "project": "default",
        "priority": 0,
        "spec": {"epochs": 2},
        "progress": None,
        "result": None,
        "error": None,
        "attempt": 1,
        "max_attempts": 3,
        "created_at": "2026-01-01T00:00:00Z",
        "cancel_requested": False,
        "produced": {"architectures": [], "latency_tables": []},
    }
    final = dict(
        job,
        status=final_status,
        error=error,
        produced={
            "architectures": [4] if final_status == "succeeded" else [],
            "latency_tables": [],
        },
    )
    streamed = {"done": False}

    def handler(req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path == "/v1/jobs/1/events":
            streamed["done"] = True
            return httpx.Response(
                200, text=sse(events), headers={"content-type": "text/event-stream"}
            )
        if path == "/v1/jobs/1":
            return httpx.Response(200, json=final if streamed["done"] else job)
        if path == "/v1/architectures/4":
            return httpx.Response(
                200,
                json={
                    "id": 4,
                    "name": "search-1",
                    "space": "mbv2-small",
                    "mult_adds": 360808256,
                    "params": 6134144,
                    "accuracy_top1": None,
                    "job_id": 1,
                    "predicted_latency": {},
                    "measured_latency": {},
                    "doc": doc,
                },
            )
        return httpx.Response(404, json={"title": "Not Found", "status": 404, "detail": path})

    return handler


@pytest.fixture
def use_transport(monkeypatch: pytest.MonkeyPatch):
    def install(handler) -> None:
        # watch and cancel live in service.cli.jobs, which looks client_from up there
        monkeypatch.setattr(
            cli_jobs,
            "client_from",
            lambda ctx: DenseNASClient(
                "http://test", "tok", transport=httpx.MockTransport(handler)
            ),
        )

    return install


def test_watch_succeeded_shows_epochs_and_derived_architecture(use_transport) -> None:
    use_transport(scripted("succeeded"))
    r = runner.invoke(cli.app, ["watch", "1"], env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    assert "epoch 2/2" in r.stdout and "val_acc 45.0 %" in r.stdout
    assert "succeeded" in r.stdout
    assert "mb_k7_e6" in r.stdout and "360.8" in r.stdout  # the block table and mult-adds


def test_watch_bar_keeps_the_job_counts_and_elapsed_time_whole_at_80_columns(
    use_transport,
) -> None:
    use_transport(scripted("succeeded"))
    r = runner.invoke(cli.app, ["watch", "1"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    bar = next(line for line in r.stdout.splitlines() if "job 1 search" in line)
    assert "…" not in bar, bar  # the job's name was "job 1 sea…", the bar and time gone
    assert "2/2" in bar and re.search(r"\d+:\d\d:\d\d", bar), bar
    assert max(len(line) for line in r.stdout.splitlines()) <= 80


def search_progress(epoch: int) -> dict[str, Any]:
    """The α/β progress figures densenas_core.search adds to a search's epoch events."""
    return {
        "val_acc": (0.4512, 0.6125)[epoch],
        "derived_val_acc": (0.4011, 0.5833)[epoch],
        "supernet_val_acc": (0.3821, 0.5049)[epoch],
        "val_eval": "argmax sub-network, BN recalibrated on 512 train images",
        "alpha_entropy": (0.99871, 0.91234)[epoch],
        "beta_entropy": (0.9999, 0.8766)[epoch],
        "alpha_top_gap": (0.00432, 0.15678)[epoch],
        "argmax_changes": (None, 3)[epoch],
    }


def test_watch_prints_search_progress_per_epoch(use_transport) -> None:
    use_transport(scripted("succeeded", epoch_extra=search_progress))
    r = runner.invoke(cli.app, ["watch", "1"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = [line.strip() for line in r.stdout.splitlines()]
    first = (
        "val acc argmax net 45.1 % · derived single-path 40.1 % · supernet (sampled) 38.2 % · "
        "α entropy 0.999 · "
        "β entropy 1.000 · α top gap 0.004"
    )
    second = (
        "val acc argmax net 61.3 % · derived single-path 58.3 % · supernet (sampled) 50.5 % · "
        "α entropy 0.912 · "
        "β entropy 0.877 · α top gap 0.157 · argmax changes 3"
    )
    assert first in lines, r.stdout  # no argmax changes on the first epoch (nothing to compare)
    assert second in lines, r.stdout
    assert (
        lines.index(second)
        == next(i for i, line in enumerate(lines) if line.startswith("epoch 2/2")) + 1
    )


def test_watch_without_search_progress_prints_no_progress_line(use_transport) -> None:
    use_transport(scripted("succeeded"))
    r = runner.invoke(cli.app, ["watch", "1"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "α entropy" not in r.stdout and "supernet (sampled)" not in r.stdout


def test_watch_failed_exits_non_zero(use_transport) -> None:
    use_transport(scripted("failed", error="CUDA out of memory"))
    r = runner.invoke(cli.app, ["watch", "1"], env={"COLUMNS": "160"})
    assert r.exit_code == 1
    assert "failed" in r.stderr and "CUDA out of memory" in r.stderr


def test_watch_json_lines(use_transport) -> None:
    use_transport(scripted("cancelled"))
    r = runner.invoke(cli.app, ["watch", "1", "--json"])
    assert r.exit_code == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["type"] == "status" and lines[1]["type"] == "step"
    assert lines[1]["data"]["steps_per_epoch"] == 3
    assert lines[-1]["type"] == "job" and lines[-1]["data"]["status"] == "cancelled"


def test_api_error_is_one_red_line_without_traceback(use_transport) -> None:
    use_transport(
        lambda req: httpx.Response(
            409,
            json={
                "type": "https://densenas.dev/problems/conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "job 1 is succeeded; cannot cancel",
                "current_state": "succeeded",
            },
            headers={"content-type": "application/problem+json"},
        )
    )
    r = runner.invoke(cli.app, ["cancel", "1"])
    assert r.exit_code == 1
    assert "job 1 is succeeded; cannot cancel" in r.stderr
    assert (
        "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    )


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # one retry (0.5 s) instead of the default four (~8 s): the notice, then the final error
    monkeypatch.setenv("DENSENAS_RETRIES", "1")
    r = runner.invoke(cli.app, ["--url", "http://127.0.0.1:9", "jobs"])
    assert r.exit_code == 1
    assert r.stderr.count("server unreachable at http://127.0.0.1:9, retrying…") == 1
    assert "cannot reach" in r.stderr

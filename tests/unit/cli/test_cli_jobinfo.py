"""``densenas job`` prints where a job ran and its checkpoints; ``--wide`` adds columns to it
and to ``densenas jobs``; tables fold long cells, never elide them (issue 15)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from densenas_core.arch import ARCH_PRESETS
from service.cli import app
from service.cli.jobinfo import checkpoints_table, workers_table
from tests.unit.cli.test_cli_service import (  # noqa: F401  (the module's control plane)
    Service,
    fake_search_worker,
    runner,
    service,
    submit,
)
from workers.runtime import write_checkpoint_dir
from workers.storage import CheckpointStore, join

WORKERS = [
    {"rank": r, "world_size": 2, "node_id": f"node-{'a' * 40}-{r}", "hostname": "gpu-host-7",
     "pid": 4100 + r, "device": f"cuda:{r}"}
    for r in (0, 1)
]  # fmt: skip


def _render(table: Any, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_job_prints_stored_workers_and_checkpoints(service: Service) -> None:  # noqa: F811
    job = submit(service)
    result = {
        "architecture": ARCH_PRESETS["densenas-c"].to_dict(),
        "arch_params": None,
        "metrics": {"val_acc": 0.5},
        "measured_latency": None,
        "workers": WORKERS,
    }
    fake_search_worker(service, job["id"], result=result).join(60)
    store = CheckpointStore(
        join(service.settings.job_storage_path(job["id"]), f"densenas-job-{job['id']}")
    )
    for step in (30, 60):
        with store.staging() as tmp:
            write_checkpoint_dir(tmp, {"w": step}, {"global_step": step, "epoch": 2, "attempt": 1})
            store.publish(tmp, f"checkpoint_step{step}")
    r = service.cli("job", str(job["id"]))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "workers (as its result recorded them)" in out
    assert "rank 0 of 2" in out and "rank 1 of 2" in out and "4101" in out and "cuda:1" in out
    assert f"checkpoints under {service.settings.job_storage_path(job['id'])}" in out
    assert out.index("checkpoint_step60") < out.index("checkpoint_step30")  # newest first
    wide = service.cli("job", str(job["id"]), "--wide")
    assert wide.exit_code == 0, wide.output
    assert "node id" in wide.stdout and WORKERS[1]["node_id"] in wide.stdout.replace("\n", "")
    doc = service.cli_json("job", str(job["id"]))  # --json: the job document, unchanged
    assert doc["id"] == job["id"] and doc["result"]["workers"] == WORKERS


def test_jobs_wide_adds_attempt_and_times_and_folds(service: Service) -> None:  # noqa: F811
    job = submit(service)
    fake_search_worker(service, job["id"]).join(60)
    narrow = runner.invoke(
        app,
        ["--url", service.url, "--token", service.token, "jobs", "--wide", "--limit", "3"],
        env={"COLUMNS": "100"},
    )
    assert narrow.exit_code == 0, narrow.output
    assert "…" not in narrow.stdout
    wide = runner.invoke(
        app,
        ["--url", service.url, "--token", service.token, "jobs", "--wide", "--limit", "3"],
        env={"COLUMNS": "220"},
    )
    header = wide.stdout.splitlines()[0]
    assert all(col in header for col in ("attempt", "started", "finished", "heartbeat"))
    row = next(line for line in wide.stdout.splitlines() if line.strip().startswith(str(job["id"])))
    assert "1/3" in row and row.count(":") >= 4  # started and finished times
    plain = service.cli("jobs", "--limit", "3")
    assert "attempt" not in plain.stdout.splitlines()[0]


def test_live_processes_table_folds_never_elides() -> None:
    resources = {
        "processes": [
            {"role": "job actor", "node_id": "Z" * 56, "node_ip": "10.1.2.3",
             "hostname": "worker-node-with-a-long-name", "pid": 321, "state": "ALIVE",
             "cpu_percent": 0.5, "rss_bytes": 700 * 1024**2, "gpu_memory_bytes": None,
             "actor_id": "X" * 32, "usage_source": "psutil on the control plane's host"},
            {"role": "rank 0", "rank": 0, "node_id": "Z" * 56, "node_ip": "10.1.2.3",
             "hostname": "worker-node-with-a-long-name", "pid": 322, "state": "ALIVE",
             "device": "cuda:0", "cpu_percent": 99.0, "rss_bytes": 2 * 1024**3,
             "gpu_memory_bytes": 1542 * 1024**2, "num_threads": 30,
             "usage_source": "psutil in a Ray task on the process's node"},
        ],
        "source": "gcs-actor-table",
    }  # fmt: skip
    table = workers_table(resources, wide=True)
    assert table is not None
    text = _render(table, 80)
    assert "…" not in text
    # folded: every character of the ids is there, over several lines of their columns
    assert text.count("Z") == 2 * 56 and text.count("X") == 32
    assert "99.0" in text and "1.5" in text
    assert workers_table({"processes": [], "workers": None}) is None
    name = "checkpoint_2026-11-29_23-43-11.715545"
    ckpt = {
        "name": name,
        "global_step": 141,
        "epoch": 4,
        "attempt": 1,
        "size_bytes": 140016,
        "created_at": "2026-11-29T23:43:11Z",
        "uri": f"s3://bucket/prefix/job-7/densenas-job-7/{name}",
    }
    text = _render(checkpoints_table([ckpt], wide=True), 70)
    assert "…" not in text
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if "━" in line)  # under the header
    uri_cells = "".join(line.split("│")[-1].strip() for line in lines[rule + 1 :])
    assert uri_cells == ckpt["uri"]

"""`densenas demo` end to end: in-process control plane, a real (tiny) search through REST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

pytest.importorskip("workers.executors")


@pytest.mark.slow
def test_demo_runs_a_real_search_and_prints_the_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--executor",
            "inline",
            "--dataset",
            "synthetic",
            "--limit-train",
            "64",
            "--limit-val",
            "32",
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--batch-size",
            "32",
            "--json",
        ],
        env={"COLUMNS": "160"},
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    job = out["job"]
    assert job["status"] == "succeeded" and job["kind"] == "search"
    assert job["spec"]["dataset"]["limit_train"] == 64
    arch = out["architecture"]
    assert arch["job_id"] == job["id"] and arch["mult_adds"] > 0 and arch["doc"]["blocks"]
    assert (tmp_path / ".densenas" / "demo.db").is_file()
    assert (tmp_path / ".densenas" / "demo" / "admin_token").is_file()

"""``densenas submit sweep`` and ``densenas trials`` against a real control plane (inline
executor: the trials really run, one after another, on the tiny space)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.cli.common import CliError
from service.cli.sweeps import parse_grid
from service.settings import Settings
from tests.support.live import LiveServer
from tests.support.tiny_specs import tiny_space
from tests.support.waiting import wait_status

runner = CliRunner()


def test_parse_grid_types_values_and_names_bad_items():
    assert parse_grid(["cost.target=12e6,2e7", "seed=0,1", "space=mbv2-small"]) == {
        "cost.target": [12e6, 2e7],
        "seed": [0, 1],
        "space": ["mbv2-small"],
    }
    assert parse_grid(["seed=0", "seed=1"]) == {"seed": [0, 1]}
    with pytest.raises(CliError, match="FIELD=V1,V2"):
        parse_grid(["cost.target"])


@pytest.mark.integration
def test_submit_sweep_then_list_its_trials_at_80_columns(tmp_path):
    space = tmp_path / "tiny.json"
    space.write_text(json.dumps(tiny_space()))

    def settings(url: str) -> Settings:
        return Settings(
            database_url=f"sqlite:///{tmp_path / 'cli.db'}",
            data_dir=tmp_path / "data",
            executor="inline",
            public_url=url,
            poll_interval_s=0.1,
        )

    with LiveServer(settings) as live:
        token = live.admin_token()

        def cli(*args: str):
            return runner.invoke(
                app, ["--url", live.url, "--token", token, *args], env={"COLUMNS": "80"}
            )

        r = cli(
            "submit", "sweep", "--space", str(space), "--dataset", "synthetic",
            "--limit-train", "32", "--limit-val", "16", "--num-classes", "4", "--epochs", "1",
            "--warmup-epochs", "0", "--batch-size", "16", "--cost-mode", "target",
            "--target", "10000", "--grid", "cost.target=10000,30000", "--max-concurrent", "2",
            "--tag", "cli-sweep", "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        job = json.loads(r.stdout)
        assert job["kind"] == "sweep" and job["spec"]["grid"] == {"cost.target": [10000, 30000]}
        assert job["spec"]["search"]["epochs"] == 1 and job["tags"] == ["cli-sweep"]
        done = wait_status(live.client(token), job["id"], {"succeeded", "failed"}, timeout=600)
        assert done["status"] == "succeeded", done["error"]

        r = cli("trials", str(job["id"]))
        assert r.exit_code == 0, r.output
        out = r.stdout
        for t in done["result"]["trials"]:
            assert str(t["job_id"]) in out and str(t["architecture_id"]) in out
        assert "cost.target" in out and "10000" in out and "30000" in out and "★" in out
        assert max(len(line) for line in out.splitlines()) <= 80

        r = cli("trials", str(job["id"]), "--json")
        assert [t["trial"] for t in json.loads(r.stdout)["data"]] == [0, 1]

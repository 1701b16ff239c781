"""The CLI against a real control plane: uvicorn on a free port, a SQLite file, no executor.

Nothing is mocked on the server side. A test plays the worker through the real worker protocol:
it claims the job the way the dispatcher does (``service.jobs.claim`` → a job token) and then
POSTs events and the result to the REST routes with that token, while the CLI under test follows
the job over SSE. Every ``--json`` output must parse.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("service.app", reason="service.app (create_app) not available yet")

from service.cli import app, free_port, run_control_plane

runner = CliRunner()


class Service:
    def __init__(self, url: str, token: str, settings: Any) -> None:
        self.url, self.token, self.settings = url, token, settings

    def cli(self, *args: str):
        return runner.invoke(
            app, ["--url", self.url, "--token", self.token, *args], env={"COLUMNS": "160"}
        )

    def cli_json(self, *args: str) -> Any:
        r = self.cli(*args, "--json")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def claim(self, job_id: int) -> str:
        """Claim ``job_id`` like the dispatcher would → the job's worker token."""
        from service.db import make_engine, make_session_factory
        from service.jobs import claim

        engine = make_engine(self.settings.database_url)
        try:
            with make_session_factory(engine)() as session:
                for _ in range(50):
                    claimed = claim(session, "cli-test-worker", 10)
                    for job, token in claimed:
                        if job.id == job_id:
                            return token
                    time.sleep(0.05)
        finally:
            engine.dispose()
        raise AssertionError(f"job {job_id} was not claimable")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from service.settings import Settings

    tmp: Path = tmp_path_factory.mktemp("cli-service")
    port = free_port()
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'svc.db'}",
        data_dir=tmp / "data",
        host="127.0.0.1",
        port=port,
        executor="none",
        public_url=f"http://127.0.0.1:{port}",
        poll_interval_s=0.2,
        sse_poll_s=0.1,
        sse_ping_s=1.0,
    )
    with run_control_plane(settings, startup_timeout=60) as url:
        from service.cli.demo import _bootstrap_token

        yield Service(url, _bootstrap_token(settings), settings)


def fake_search_worker(
    svc: Service,
    job_id: int,
    *,
    epochs: int = 2,
    steps: int = 3,
    outcome: str = "succeeded",
    result: dict[str, Any] | None = None,
) -> threading.Thread:
    """Run a search's worker side in a thread: events for every step/epoch, then complete."""
    from densenas_core.arch import ARCH_PRESETS

    def run() -> None:
        token = svc.claim(job_id)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=svc.url, headers=headers, timeout=30) as http:
            seq = 0
            for epoch in range(epochs):
                batch = []
                for step in range(steps):
                    seq += 1
                    batch.append(
                        {
                            "seq": seq,
                            "type": "step",
                            "data": {
                                "phase": "weights",
                                "epoch": epoch,
                                "step": step,
                                "steps_per_epoch": steps,
                                "loss": 2.3 - 0.1 * step,
                                "acc": 0.1 * step,
                                "expected_cost": 40.0,
                            },
                        }
                    )
                seq += 1
                batch.append(
                    {
                        "seq": seq,
                        "type": "epoch",
                        "data": {
                            "epoch": epoch,
                            "train_loss": 1.9,
                            "train_acc": 0.3,
                            "val_loss": 2.0,
                            "val_acc": 0.25,
                            "expected_cost": 38.5,
                            "lr": 0.1,
                        },
                    }
                )
                r = http.post(f"/v1/jobs/{job_id}/events", json={"events": batch})
                r.raise_for_status()
                time.sleep(0.2)
            body: dict[str, Any] = {"outcome": outcome, "error": None, "result": None}
            if outcome == "succeeded" and result is not None:
                body["result"] = result
            elif outcome == "succeeded":
                body["result"] = {
                    "architecture": ARCH_PRESETS["densenas-c"].to_dict(),
                    "arch_params": None,
                    "metrics": {"val_acc": 0.25},
                    "measured_latency": None,
                }
            else:
                body["error"] = "worker says no"
            http.post(f"/v1/jobs/{job_id}/complete", json=body).raise_for_status()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def submit(svc: Service, *extra: str) -> dict[str, Any]:
    return svc.cli_json(
        "submit",
        "search",
        "--space",
        "mbv2-small",
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
        "16",
        *extra,
    )


def test_submit_search_flags_reach_the_spec(service: Service) -> None:
    job = submit(
        service, "--seed", "7", "--cost-metric", "flops", "--lam", "0.2", "--priority", "5"
    )
    assert job["kind"] == "search" and job["status"] == "queued" and job["priority"] == 5
    spec = job["spec"]
    assert spec["space"] == "mbv2-small" and spec["epochs"] == 2 and spec["seed"] == 7
    assert spec["dataset"]["name"] == "synthetic" and spec["dataset"]["limit_train"] == 64
    assert spec["cost"]["lam"] == 0.2 and spec["cost"]["metric"] == "flops"
    service.cli("cancel", str(job["id"]))


def test_idempotency_key_returns_the_same_job(service: Service) -> None:
    a = submit(service, "--idempotency-key", "cli-idem-1")
    b = submit(service, "--idempotency-key", "cli-idem-1")
    assert a["id"] == b["id"]
    service.cli("cancel", str(a["id"]))


def test_jobs_and_job_json(service: Service) -> None:
    job = submit(service)
    page = service.cli_json("jobs", "--limit", "50")
    assert job["id"] in [j["id"] for j in page["data"]]
    queued = service.cli_json("jobs", "--status", "queued", "--kind", "search")
    assert all(j["status"] == "queued" for j in queued["data"])
    one = service.cli_json("job", str(job["id"]))
    assert one["id"] == job["id"] and one["spec"]["epochs"] == 2
    r = service.cli("jobs")
    assert r.exit_code == 0 and str(job["id"]) in r.stdout and "queued" in r.stdout
    service.cli("cancel", str(job["id"]))


def test_cancel_then_retry(service: Service) -> None:
    job = submit(service)
    cancelled = service.cli_json("cancel", str(job["id"]))
    assert cancelled["status"] == "cancelled"
    again = service.cli_json("retry", str(job["id"]))
    assert again["status"] == "queued"
    r = service.cli("cancel", str(job["id"]))
    assert r.exit_code == 0
    r = service.cli("cancel", str(job["id"]))  # already cancelled: 409, one red line
    assert r.exit_code == 1 and "Traceback" not in r.output and r.stderr.strip()


def test_validation_error_names_the_field(service: Service) -> None:
    r = service.cli("submit", "search", "--epochs", "0")
    assert r.exit_code == 1
    assert "epochs" in r.stderr and "Traceback" not in r.output


def test_unknown_job_is_404(service: Service) -> None:
    r = service.cli("job", "999999")
    assert r.exit_code == 1 and "404" in r.stderr


def test_watch_json_follows_a_search_to_its_architecture(service: Service) -> None:
    job = submit(service, "--priority", "100")
    worker = fake_search_worker(service, job["id"])
    r = service.cli("watch", str(job["id"]), "--json")
    worker.join(timeout=30)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    types = [x["type"] for x in lines]
    assert types.count("step") == 6 and types.count("epoch") == 2
    final = lines[-1]
    assert final["type"] == "job" and final["data"]["status"] == "succeeded"
    arch_ids = final["data"]["produced"]["architectures"]
    assert len(arch_ids) == 1

    arch = service.cli_json("arch", "show", str(arch_ids[0]))
    assert arch["job_id"] == job["id"] and round(arch["mult_adds"] / 1e6, 1) == 360.8
    listed = service.cli_json("arch", "list")
    assert arch_ids[0] in [a["id"] for a in listed["data"]]


def test_watch_live_view_prints_the_derived_block_table(service: Service, tmp_path: Path) -> None:
    job = submit(service, "--priority", "100")
    worker = fake_search_worker(service, job["id"])
    r = service.cli("watch", str(job["id"]))
    worker.join(timeout=30)
    assert r.exit_code == 0, r.output
    assert "epoch 2/2" in r.stdout and "succeeded" in r.stdout
    assert "mb_k7_e6" in r.stdout and "360.8" in r.stdout

    arch_id = service.cli_json("job", str(job["id"]))["produced"]["architectures"][0]
    out = tmp_path / "arch.json"
    r = service.cli("arch", "export", str(arch_id), "--format", "json", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["blocks"]


def test_watch_failed_job_exits_non_zero(service: Service) -> None:
    job = submit(service, "--priority", "100", "--max-attempts", "1")
    assert job["max_attempts"] == 1
    worker = fake_search_worker(service, job["id"], epochs=1, outcome="failed")
    r = service.cli("watch", str(job["id"]))
    worker.join(timeout=30)
    assert r.exit_code == 1
    assert "failed" in r.stderr and "worker says no" in r.stderr


def test_job_prints_the_error_of_every_attempt(service: Service) -> None:
    job = submit(service, "--priority", "100", "--max-attempts", "1")
    frames = "\n".join(f'  File "search.py", line {i}, in step' for i in range(40))
    for attempt, error in ((1, "RuntimeError: CUDA out of memory"), (2, "ValueError: NaN loss")):
        if attempt > 1:  # runnable now (an automatic retry waits for its backoff)
            assert service.cli_json("retry", str(job["id"]))["attempt"] == attempt
        token = service.claim(job["id"])
        r = httpx.post(
            f"{service.url}/v1/jobs/{job['id']}/complete",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "outcome": "failed",
                "error": error,
                "traceback_tail": f"Traceback:\n{frames}\n{error} [{attempt}]",
            },
        )
        r.raise_for_status()
    r = service.cli("job", str(job["id"]))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "attempt 1: RuntimeError: CUDA out of memory" in out
    assert "attempt 2: ValueError: NaN loss" in out
    assert "RuntimeError: CUDA out of memory [1]" in out  # the tail's last line
    assert "line 39, in step" in out and "line 20, in step" not in out  # only its end
    assert out.index("attempt 1:") < out.index("[1]") < out.index("attempt 2:")
    assert f"densenas job {job['id']} --json" in out
    doc = service.cli_json("job", str(job["id"]))
    assert [e["attempt"] for e in doc["attempt_errors"]] == [1, 2]


def test_me_tables_tokens_json(service: Service) -> None:
    me = service.cli_json("me")
    assert me
    tables = service.cli_json("tables")
    assert "data" in tables
    tokens = service.cli_json("token", "list")
    assert tokens


def test_token_create_remote_then_use_it(service: Service) -> None:
    created = service.cli_json(
        "token", "create", "--remote", "--name", "bob", "--project", "vision"
    )
    assert created["token"].startswith("dn_") and created["project"] == "vision"
    r = runner.invoke(app, ["--url", service.url, "--token", created["token"], "me", "--json"])
    assert r.exit_code == 0, r.output
    me = json.loads(r.stdout)
    assert me["name"] == "bob" and me["project"] == "vision" and not me["is_admin"]
    r = runner.invoke(app, ["--url", service.url, "--token", created["token"], "token", "list"])
    assert r.exit_code == 1 and "403" in r.stderr  # tokens are an admin resource


def finished_search(service: Service) -> dict[str, Any]:
    """A search of mbv2-small that succeeded with α/β (what derive needs) → the job."""
    from densenas_core.supernet import SuperNet

    net = SuperNet("mbv2-small", num_classes=10)
    result = {
        "architecture": net.export(),
        "metrics": {},
        "arch_params": {"alpha": net.alpha_lists(), "beta": net.beta_lists()},
    }
    job = submit(service, "--priority", "100")
    fake_search_worker(service, job["id"], epochs=1, result=result).join(timeout=30)
    assert service.cli_json("job", str(job["id"]))["status"] == "succeeded"
    return job


def test_derive_under_a_mult_adds_budget(service: Service) -> None:
    job = finished_search(service)
    arch = service.cli_json("derive", str(job["id"]), "--max-mult-adds", "15M", "--top-k", "256")
    assert arch["mult_adds"] <= 15_000_000 and arch["job_id"] == job["id"]
    assert arch["derived_from"] is not None
    r = service.cli("derive", str(job["id"]), "--max-mult-adds", "1k")
    assert r.exit_code == 1 and "Traceback" not in r.output  # nothing that small: 422
    r = service.cli("arch", "show", str(arch["id"]))
    assert r.exit_code == 0 and "derived from" in r.stdout


def test_submit_retrain_and_profile_specs(service: Service, tmp_path: Path) -> None:
    job = submit(service, "--priority", "100")
    fake_search_worker(service, job["id"], epochs=1).join(timeout=30)
    arch_id = service.cli_json("job", str(job["id"]))["produced"]["architectures"][0]

    rt = service.cli_json(
        "submit",
        "retrain",
        str(arch_id),
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--nodes",
        "2",
        "--workers-per-node",
        "2",
        "--gpus-per-worker",
        "1",
        "--dataset",
        "synthetic",
        "--limit-train",
        "64",
    )
    assert rt["kind"] == "retrain" and rt["architecture_id"] == arch_id
    spec = rt["spec"]
    assert (spec["num_nodes"], spec["workers_per_node"], spec["gpus_per_worker"]) == (2, 2, 1)
    assert spec["lr"] == 0.05 and spec["dataset"]["limit_train"] == 64
    service.cli("cancel", str(rt["id"]))

    r = service.cli("submit", "retrain", "999999")
    assert r.exit_code == 1 and "999999" in r.stderr

    base = tmp_path / "profile.yaml"
    base.write_text("space: mbv2-small\nrepeats: 7\nwarmup: 2\n")
    pf = service.cli_json(
        "submit",
        "profile",
        "--spec",
        str(base),
        "--device",
        "cpu",
        "--batch",
        "4",
        "--input-size",
        "32",
    )
    assert pf["kind"] == "profile"
    assert pf["spec"]["device"]["device"] == "cpu" and pf["spec"]["batch_size"] == 4
    assert pf["spec"]["repeats"] == 7 and pf["spec"]["input_size"] == 32
    service.cli("cancel", str(pf["id"]))


def test_submit_search_with_a_custom_space_file(service: Service, tmp_path: Path) -> None:
    import yaml

    from densenas_core.spaces import get_space

    desc = get_space("resnet-small").to_dict()
    desc["name"] = "my-space"
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(desc))
    job = submit(service, "--space", str(f))
    assert job["spec"]["space"]["name"] == "my-space"
    service.cli("cancel", str(job["id"]))

    desc["stages"][0]["widths"] = []
    f.write_text(yaml.safe_dump(desc))
    r = service.cli("submit", "search", "--space", str(f))  # rejected before submitting
    assert r.exit_code == 1 and "widths" in r.stderr

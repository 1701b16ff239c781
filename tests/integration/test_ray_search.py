"""Real Ray (local, 2 CPUs): search jobs through RayExecutor → detached actor → TorchTrainer.

One Ray session for the module. Every job reports to a real HTTP server speaking the control
plane's worker routes, so the assertions are about what the control plane would have stored.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

import ray_env  # noqa: F401,E402  (first: the environment of the Ray processes)
from fake_control_plane import FakeControlPlane  # noqa: E402
from tiny_specs import tiny_space  # noqa: E402
from workers.executors import RayExecutor  # noqa: E402
from workers.payload import JobPayload  # noqa: E402
from workers.runtime import run_dir  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.integration,
              pytest.mark.timeout(900)]

TINY_SPACE = tiny_space(input_size=16)
# Synthetic, 4 classes at 16×16: 480 train / 120 arch images, global batch 16 → 30 weight
# steps per epoch (+ 7 arch steps after the warm-up epoch), 3 epochs. A cost weight that makes
# the preferences decisive (α/β gaps ≫ the float drift between 1 and 2 workers, see
# test_two_workers_...); Fashion-MNIST is exercised by the multi-node retrain.
SEARCH = {"space": TINY_SPACE,
          "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4,
                      "input_size": 16},
          "epochs": 3, "warmup_epochs": 1, "batch_size": 16, "seed": 3, "w_lr": 0.05,
          "a_lr": 0.1, "cost": {"lam": 2.0}, "checkpoint_every": 10, "num_workers": 1}
FIT_TIMEOUT = 600


@pytest.fixture(scope="module")
def plane():
    with FakeControlPlane() as p:
        yield p


@pytest.fixture(scope="module")
def executor():
    t0 = time.monotonic()
    ex = RayExecutor(num_cpus=2, object_store_memory=150 * 1024**2)
    ex._ray()
    print(f"\n[timing] local Ray started in {time.monotonic() - t0:.1f}s")
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-storage")


def launch(executor, plane, storage, job_id, spec, kind="search", **kw) -> JobPayload:
    plane.add_job(job_id, token=f"tok-{job_id}")
    p = JobPayload(job_id=job_id, kind=kind, attempt=1, spec=spec, api_url=plane.url,
                   job_token=f"tok-{job_id}", storage_path=str(storage), **kw)
    executor.start(p)
    return p


def wait_gone(executor, job_id, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while executor.alive(job_id):
        assert time.monotonic() < deadline, f"actor of job {job_id} still alive"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def one_worker(executor, plane, storage):
    """(a) + (e), started together (1 CPU each): a 1-worker search and a bad data path."""
    t0 = time.monotonic()
    launch(executor, plane, storage, 101, SEARCH)
    launch(executor, plane, storage, 102,
           {**SEARCH, "dataset": {"name": "imagefolder", "root": "/nonexistent/images"}})
    assert executor.alive(101)
    bad = plane.wait_complete(102, FIT_TIMEOUT)
    t_bad = time.monotonic() - t0
    good = plane.wait_complete(101, FIT_TIMEOUT)
    t_good = time.monotonic() - t0
    print(f"\n[timing] bad-data job failed after {t_bad:.1f}s; 1-worker search completed "
          f"after {t_good:.1f}s (search loop {good['result']['metrics']['wall_seconds']:.1f}s"
          f" → fit overhead ≈ {t_good - good['result']['metrics']['wall_seconds']:.1f}s)"
          if good.get("result") else "")
    return good, bad


def test_one_worker_search_completes(one_worker, plane, executor, storage):
    good, _ = one_worker
    assert good["outcome"] == "succeeded", good["error"]
    r = good["result"]
    assert r["architecture"]["space"] == "tiny" and r["architecture"]["in_channels"] == 3
    assert r["metrics"]["world_size"] == 1 and r["metrics"]["global_steps"] > 3 * 25
    assert r["measured_latency"]["device_kind"] == "cpu" and r["measured_latency"]["median_ms"] > 0
    assert len(r["workers"]) == 1
    job = plane.jobs[101]
    assert [e["epoch"] for e in job.of_type("epoch")] == [0, 1, 2] and job.duplicates == 0
    wait_gone(executor, 101)  # the actor removes itself when done
    ckpts = [d for d in (storage / "densenas-job-101").glob("checkpoint_*") if d.is_dir()]
    assert 1 <= len(ckpts) <= 2  # CheckpointConfig(num_to_keep=2)


def test_bad_data_path_fails_with_the_message_without_retries(one_worker, plane, executor):
    _, bad = one_worker
    assert bad["outcome"] == "failed"
    assert "/nonexistent/images" in bad["error"] and "FileNotFoundError" in bad["error"]
    assert len(plane.jobs[102].completions) == 1
    wait_gone(executor, 102)


def test_two_workers_derive_the_same_architecture_as_one(one_worker, executor, plane, storage):
    """Same global batch (16 = 2 × 8) and seed: each rank takes its stride of every batch,
    gradients are all-reduce-averaged and batch norm uses the global batch, so the 2-worker
    search is the 1-worker search up to float summation order (exact at first, see
    tests/unit/workers/test_data_parallel.py; training amplifies it to ~1e-2 in α by the end),
    and derives the same architecture."""
    t0 = time.monotonic()
    launch(executor, plane, storage, 103, {**SEARCH, "num_workers": 2})
    two = plane.wait_complete(103, FIT_TIMEOUT)
    print(f"\n[timing] 2-worker search completed after {time.monotonic() - t0:.1f}s")
    assert two["outcome"] == "succeeded", two["error"]
    one = one_worker[0]["result"]
    r = two["result"]
    assert r["metrics"]["world_size"] == 2 and len(r["workers"]) == 2
    assert {w["rank"] for w in r["workers"]} == {0, 1}
    assert r["metrics"]["global_steps"] == one["metrics"]["global_steps"]
    assert r["architecture"] == one["architecture"]
    for key in ("alpha", "beta"):
        for row_two, row_one in zip(r["arch_params"][key], one["arch_params"][key]):
            assert row_two == pytest.approx(row_one, abs=0.1)


def test_fault_drill_worker_killed_mid_search_resumes_from_checkpoint(
        one_worker, executor, plane, storage):
    """SIGKILL the Ray Train worker after its first checkpoint: FailureConfig restarts the
    group from that checkpoint, the job completes with the uninterrupted result, and the
    stored event stream has every step exactly once."""
    p = launch(executor, plane, storage, 104, SEARCH)
    directory = run_dir(p)
    marker = directory / "workers" / "attempt1-rank0.json"
    deadline = time.monotonic() + FIT_TIMEOUT
    # the controller writes its snapshot once it has registered a checkpoint
    while not (directory / "checkpoint_manager_snapshot.json").exists() or not marker.exists():
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert not plane.jobs[104].completions, plane.jobs[104].completions
        time.sleep(0.05)
    victim = json.loads(marker.read_text())["pid"]
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    done = plane.wait_complete(104, FIT_TIMEOUT)
    print(f"\n[timing] killed pid {victim}; job completed {time.monotonic() - t_kill:.1f}s later")
    assert done["outcome"] == "succeeded", done["error"]
    assert json.loads(marker.read_text())["pid"] != victim  # a new worker took over
    job = plane.jobs[104]
    assert any("resumed from the checkpoint" in d.get("message", "") for d in job.of_type("log"))
    # same result as the undisturbed run (the resume is exact)
    assert done["result"]["architecture"] == one_worker[0]["result"]["architecture"]
    assert done["result"]["arch_params"] == one_worker[0]["result"]["arch_params"]
    # no gap, no duplicate: the same step/epoch events as the undisturbed run, once each
    clean = plane.jobs[101]
    loop_seqs = sorted(s for s in job.events if s < 2**40)  # the resume note is worker-range
    assert loop_seqs == sorted(clean.events)
    steps = [d["global_step"] for d in job.of_type("step")]
    assert steps == sorted(set(steps)) == list(range(10, steps[-1] + 1, 10))
    assert [e["epoch"] for e in job.of_type("epoch")] == [0, 1, 2]
    wait_gone(executor, 104)


def test_cancel_during_a_slow_start_ends_the_job_and_its_actor(executor, plane, storage):
    """The job actor heartbeats from its first second and watches the cancel flag; a trainer
    that does not stop within the grace period (here: still starting) is torn down with it."""
    launch(executor, plane, storage, 105, SEARCH)
    deadline = time.monotonic() + 120
    while plane.jobs[105].heartbeats < 1:  # before any trainer worker exists
        assert time.monotonic() < deadline, "the job actor sent no heartbeat"
        time.sleep(0.1)
    plane.jobs[105].cancel_requested = True
    done = plane.wait_complete(105, 120)
    assert done["outcome"] == "cancelled" and "did not stop within 2s" in done["error"]
    wait_gone(executor, 105)

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

from tests.support import ray_env  # noqa: F401  (first: the environment of the Ray processes)
from tests.support.fake_control_plane import FakeControlPlane
from tests.support.tiny_specs import tiny_space
from workers.executors import RayExecutor
from workers.payload import JobPayload
from workers.runtime import run_dir

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

TINY_SPACE = tiny_space(input_size=16)
# Synthetic, 4 classes at 16×16: 480 train / 120 arch images, global batch 16 → 30 weight
# steps per epoch (+ 7 arch steps after the warm-up epoch), 3 epochs. A cost weight that makes
# the preferences decisive (α/β gaps ≫ the float drift between 1 and 2 workers, see
# test_two_workers_...); Fashion-MNIST is exercised by the multi-node retrain.
SEARCH = {
    "space": TINY_SPACE,
    "dataset": {"name": "synthetic", "limit_train": 600, "num_classes": 4, "input_size": 16},
    "epochs": 3,
    "warmup_epochs": 1,
    "batch_size": 16,
    "seed": 3,
    "w_lr": 0.05,
    "a_lr": 0.1,
    "cost": {"lam": 2.0},
    "checkpoint_every": 10,
    "num_workers": 1,
}
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
    p = JobPayload(
        job_id=job_id,
        kind=kind,
        attempt=1,
        spec=spec,
        api_url=plane.url,
        job_token=f"tok-{job_id}",
        storage_path=str(storage),
        **kw,
    )
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
    launch(
        executor,
        plane,
        storage,
        102,
        {**SEARCH, "dataset": {"name": "imagefolder", "root": "/nonexistent/images"}},
    )
    assert executor.alive(101)
    bad = plane.wait_complete(102, FIT_TIMEOUT)
    t_bad = time.monotonic() - t0
    good = plane.wait_complete(101, FIT_TIMEOUT)
    t_good = time.monotonic() - t0
    print(
        f"\n[timing] bad-data job failed after {t_bad:.1f}s; 1-worker search completed "
        f"after {t_good:.1f}s (search loop {good['result']['metrics']['wall_seconds']:.1f}s"
        f" → fit overhead ≈ {t_good - good['result']['metrics']['wall_seconds']:.1f}s)"
        if good.get("result")
        else ""
    )
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


def next_attempt(executor, plane, p: JobPayload) -> JobPayload:
    """What the dispatcher does after a failed attempt: a new token, attempt + 1, same job
    (the fake control plane keeps the stored events, so duplicates across attempts count)."""
    job = plane.jobs[p.job_id]
    with plane.lock:
        job.token, job.status = f"tok-{p.job_id}-{p.attempt + 1}", "running"
        job.completions.clear()
    nxt = JobPayload(**{**p.__dict__, "attempt": p.attempt + 1, "job_token": job.token})
    executor.start(nxt)
    return nxt


def reserved_cpus() -> float:
    """CPUs held right now (placement groups, actors): 0 when nothing runs."""
    import ray

    return ray.cluster_resources().get("CPU", 0.0) - ray.available_resources().get("CPU", 0.0)


def our_groups() -> list:
    from ray.util.placement_group import placement_group_table

    from workers.placement import job_groups

    return job_groups(placement_group_table())


def wait_released(timeout: float = 30.0) -> float:
    """Seconds until no CPU is reserved and none of our placement groups is left."""
    t0 = time.monotonic()
    while reserved_cpus() > 0 or our_groups():
        assert time.monotonic() - t0 < timeout, (reserved_cpus(), our_groups())
        time.sleep(0.1)
    return time.monotonic() - t0


def wait_marker(plane, p: JobPayload, rank: int = 0) -> dict:
    """The worker marker of ``rank`` once the attempt has registered a checkpoint."""
    directory = run_dir(p)
    marker = directory / "workers" / f"attempt{p.attempt}-rank{rank}.json"
    deadline = time.monotonic() + FIT_TIMEOUT
    # the controller writes its snapshot once it has registered a checkpoint
    while not (directory / "checkpoint_manager_snapshot.json").exists() or not marker.exists():
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert not plane.jobs[p.job_id].completions, plane.jobs[p.job_id].completions
        time.sleep(0.05)
    return json.loads(marker.read_text())


def test_fault_drill_worker_killed_mid_search_fails_the_attempt_and_the_retry_resumes(
    one_worker, executor, plane, storage
):
    """SIGKILL a Ray Train worker (what the kernel's OOM killer does) after its first
    checkpoint. One retry budget: Ray Train restarts nothing, the attempt fails with the
    worker's death as its error, its placement group is released at once, and the next attempt
    (the dispatcher's retry) resumes from the checkpoint and ends with the uninterrupted result;
    the stored event stream has every step exactly once."""
    p = launch(executor, plane, storage, 104, SEARCH)
    victim = wait_marker(plane, p)["pid"]
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    failed = plane.wait_complete(104, FIT_TIMEOUT)
    t_detect = time.monotonic() - t_kill
    assert failed["outcome"] == "failed"
    assert "died" in failed["error"].lower() or "exit" in failed["error"].lower(), failed["error"]
    wait_gone(executor, 104)
    t_free = wait_released()
    second = next_attempt(executor, plane, p)
    done = plane.wait_complete(104, FIT_TIMEOUT)
    print(
        f"\n[drill] worker SIGKILL: attempt failed after {t_detect:.1f}s, CPUs free "
        f"{t_free:.1f}s later; retry succeeded {time.monotonic() - t_kill:.1f}s after the kill"
    )
    assert done["outcome"] == "succeeded", done["error"]
    job = plane.jobs[104]
    assert any("resumed from the checkpoint" in d.get("message", "") for d in job.of_type("log"))
    assert (
        json.loads((run_dir(second) / "workers" / "attempt2-rank0.json").read_text())["pid"]
        != victim
    )
    # same result as the undisturbed run (the resume is exact)
    assert done["result"]["architecture"] == one_worker[0]["result"]["architecture"]
    assert done["result"]["arch_params"] == one_worker[0]["result"]["arch_params"]
    # no gap, no duplicate: the same step/epoch events as the undisturbed run, once each
    clean = plane.jobs[101]
    loop_seqs = sorted(s for s in job.events if s < 2**40)  # resume notes are worker-range
    assert loop_seqs == sorted(clean.events)
    steps = [d["global_step"] for d in job.of_type("step")]
    assert steps == sorted(set(steps)) == list(range(10, steps[-1] + 1, 10))
    assert [e["epoch"] for e in job.of_type("epoch")] == [0, 1, 2]
    wait_gone(executor, 104)
    wait_released()


def _controller_pids() -> list[int]:
    from tests.support.ray_procs import _pids, cmdline

    return [pid for pid in _pids() if any("TrainController" in a for a in cmdline(pid))]


def test_fault_drill_controller_killed_releases_its_cpus_and_the_next_job_runs(
    one_worker, executor, plane, storage
):
    """kill -9 of the Ray Train controller mid-run: its placement group would outlive it (it
    belongs to the control plane's Ray job); the job actor reports the failure and removes the
    group, so no CPU stays reserved and the next job gets the whole cluster."""
    before = set(_controller_pids())
    p = launch(executor, plane, storage, 106, SEARCH)
    wait_marker(plane, p)
    [controller] = set(_controller_pids()) - before
    os.kill(controller, signal.SIGKILL)
    t_kill = time.monotonic()
    failed = plane.wait_complete(106, FIT_TIMEOUT)
    t_detect = time.monotonic() - t_kill
    assert failed["outcome"] == "failed", failed
    wait_gone(executor, 106)
    t_free = wait_released()
    print(
        f"\n[drill] controller SIGKILL: attempt failed after {t_detect:.1f}s; CPUs free "
        f"{t_free:.1f}s after that"
    )
    nxt = launch(
        executor, plane, storage, 107, {**SEARCH, "num_workers": 2, "epochs": 1, "warmup_epochs": 0}
    )
    assert plane.wait_complete(nxt.job_id, FIT_TIMEOUT)["outcome"] == "succeeded"
    wait_gone(executor, 107)
    wait_released()


def test_the_sweep_removes_groups_no_running_attempt_owns(executor):
    """A group left by an attempt whose job actor is gone too (the actor was killed, the
    control plane restarted): the dispatcher's sweep removes it; a running attempt's stays."""
    import ray
    from ray.util.placement_group import placement_group

    from workers.placement import group_name

    executor._ray()
    mine = placement_group([{"CPU": 1}], name=group_name(900, 1, 1))
    other = placement_group([{"CPU": 1}], name=group_name(901, 2, 1))
    ray.get([mine.ready(), other.ready()], timeout=60)
    assert reserved_cpus() == 2
    report = executor.sweep({901: 2})
    assert report.groups_removed == 1 and report.cpus_released == 1.0
    assert [g.job_id for g in our_groups()] == [901]
    assert executor.sweep({901: 3}).groups_removed == 1  # job 901 moved on to attempt 3
    wait_released()


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
    wait_released()


def test_fault_drill_cancel_while_waiting_for_cpus_leaves_nothing_reserved(
    executor, plane, storage
):
    """Job A holds both CPUs; job B's placement group waits for them. B is cancelled while it
    waits: its actor ends it, its pending group is removed (no request left in Ray's queue),
    A finishes, and nothing stays reserved."""
    a = launch(executor, plane, storage, 108, {**SEARCH, "num_workers": 2, "epochs": 2})
    deadline = time.monotonic() + FIT_TIMEOUT
    while reserved_cpus() < 2:
        assert time.monotonic() < deadline, "job A never held both CPUs"
        time.sleep(0.1)
    launch(executor, plane, storage, 109, SEARCH)
    while not [g for g in our_groups() if g.job_id == 109 and g.state == "PENDING"]:
        assert time.monotonic() < deadline, ("job B never queued for CPUs", our_groups())
        time.sleep(0.1)
    plane.jobs[109].cancel_requested = True
    t0 = time.monotonic()
    done = plane.wait_complete(109, 120)
    assert done["outcome"] == "cancelled", done
    wait_gone(executor, 109)
    assert not [g for g in our_groups() if g.job_id == 109]
    t_cancel = time.monotonic() - t0
    assert plane.wait_complete(a.job_id, FIT_TIMEOUT)["outcome"] == "succeeded"
    wait_gone(executor, a.job_id)
    wait_released()
    print(
        f"\n[drill] cancel while pending: cancelled and its group removed {t_cancel:.1f}s "
        f"after the request; 0 CPUs reserved once A finished"
    )

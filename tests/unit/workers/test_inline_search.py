"""A real tiny search through InlineExecutor and the HTTP reporter (no Ray)."""

from __future__ import annotations

import time

import pytest

from tests.support.fake_control_plane import FakeControlPlane
from tests.support.tiny_specs import tiny_space
from workers.executors import InlineExecutor
from workers.payload import JobPayload
from workers.runtime import find_latest_checkpoint, run_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY_SPACE = tiny_space(input_size=8)
SPEC = {
    "space": TINY_SPACE,
    "dataset": {"name": "synthetic", "limit_train": 120, "num_classes": 4, "input_size": 8},
    "epochs": 2,
    "warmup_epochs": 1,
    "batch_size": 16,
    "checkpoint_every": 4,
    "a_lr": 0.05,
}


def search(plane, tmp_path, job_id, attempt=1, spec=SPEC, cancel_after_events=None):
    if job_id not in plane.jobs:
        plane.add_job(job_id, token="t")
    p = JobPayload(
        job_id=job_id,
        kind="search",
        attempt=attempt,
        spec=spec,
        api_url=plane.url,
        job_token="t",
        storage_path=str(tmp_path),
    )
    ex = InlineExecutor()
    ex.start(p)
    if cancel_after_events is not None:
        deadline = time.monotonic() + 120
        while len(plane.jobs[job_id].events) < cancel_after_events:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ex.cancel(job_id)
    assert ex.wait(job_id, timeout=240)
    return p, plane.jobs[job_id].completions[-1]


def test_search_completes_with_architecture_and_latency(tmp_path):
    with FakeControlPlane() as plane:
        _, done = search(plane, tmp_path, 1)
        job = plane.jobs[1]
    assert done["outcome"] == "succeeded", done["error"]
    r = done["result"]
    assert r["architecture"]["space"] == "tiny" and r["architecture"]["blocks"]
    assert set(r["arch_params"]) == {"alpha", "beta"}
    assert r["metrics"]["global_steps"] > 0 and r["metrics"]["world_size"] == 1
    lat = r["measured_latency"]
    assert lat["device_kind"] == "cpu" and lat["median_ms"] > 0 and lat["device_name"]
    assert [e["epoch"] for e in job.of_type("epoch")] == [0, 1]
    assert job.of_type("arch") and job.of_type("step")
    assert job.duplicates == 0


def test_cancelled_attempt_then_retry_resumes_and_matches_an_uninterrupted_run(tmp_path):
    with FakeControlPlane() as plane:
        _, clean = search(plane, tmp_path / "clean", 1)
        p, first = search(plane, tmp_path / "resumed", 2, cancel_after_events=2)
        assert first["outcome"] == "cancelled"
        latest = find_latest_checkpoint(run_dir(p))
        assert latest is not None
        plane.jobs[2].status = "running"  # the control plane retries the job: attempt 2
        plane.jobs[2].completions.clear()
        _, second = search(plane, tmp_path / "resumed", 2, attempt=2)
        job = plane.jobs[2]
    assert second["outcome"] == "succeeded", second["error"]
    # the same architecture and α/β as without the interruption (seeded, resumed bit-for-bit)
    assert second["result"]["architecture"] == clean["result"]["architecture"]
    assert second["result"]["arch_params"] == clean["result"]["arch_params"]
    # the stored stream: one row per seq, every logged step present exactly once
    steps = [(d["global_step"]) for d in job.of_type("step")]
    assert steps == sorted(set(steps))
    assert steps == [d["global_step"] for d in plane.jobs[1].of_type("step")]
    assert any("resumed" in d.get("message", "") for d in job.of_type("log"))

"""InlineExecutor end to end against a real HTTP server: the same job bodies as on Ray."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tests.support.fake_control_plane import FakeControlPlane
from tests.support.tiny_specs import tiny_space
from workers.executors import InlineExecutor
from workers.payload import JobPayload, PayloadError
from workers.runtime import Runtime, find_latest_checkpoint, read_checkpoint_dir, run_dir

pytestmark = pytest.mark.timeout(120)

TINY_SPACE = tiny_space(input_size=8, align_ops=("mb_k3_e3",))


@pytest.fixture()
def plane():
    with FakeControlPlane() as p:
        yield p


def payload(plane, tmp_path, job_id, kind, spec, **kw) -> JobPayload:
    plane.add_job(job_id, token=f"tok{job_id}")
    return JobPayload(
        job_id=job_id,
        kind=kind,
        attempt=kw.pop("attempt", 1),
        spec=spec,
        api_url=plane.url,
        job_token=f"tok{job_id}",
        storage_path=str(tmp_path),
        **kw,
    )


def test_payload_round_trip_and_validation(tmp_path):
    p = JobPayload(
        job_id=3,
        kind="search",
        attempt=2,
        spec={"epochs": 1},
        api_url="http://x/",
        job_token="t",
        storage_path=str(tmp_path),
        latency_table={"entries": {}},
    )
    again = JobPayload.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p and again.run_name == "densenas-job-3" and again.api_base == "http://x"
    with pytest.raises(PayloadError, match="kind"):
        JobPayload.from_dict({**p.to_dict(), "kind": "dance"})
    with pytest.raises(PayloadError, match="architecture"):
        JobPayload.from_dict({**p.to_dict(), "kind": "retrain"})
    with pytest.raises(PayloadError, match="job_token"):
        JobPayload.from_dict({k: v for k, v in p.to_dict().items() if k != "job_token"})


def test_local_checkpoints_keep_two_and_resume_only_on_retry(tmp_path):
    first = JobPayload(
        job_id=5,
        kind="search",
        attempt=1,
        spec={},
        api_url="http://x",
        job_token="t",
        storage_path=str(tmp_path),
    )
    rt = Runtime(first)
    for step in (10, 20, 30):
        rt.save_checkpoint({"w": torch.full((2,), float(step))}, {"global_step": step})
    ckpts = sorted(run_dir(first).glob("checkpoint_*"))
    assert len(ckpts) == 2
    assert rt.load_checkpoint() is None  # attempt 1 never resumes
    retry = JobPayload.from_dict({**first.to_dict(), "attempt": 2})
    state, meta = Runtime(retry).load_checkpoint()
    assert meta["global_step"] == 30 and state["w"].tolist() == [30.0, 30.0]
    assert read_checkpoint_dir(find_latest_checkpoint(run_dir(first)))[1]["global_step"] == 30


def test_profile_job_completes_with_a_latency_table(plane, tmp_path):
    p = payload(
        plane,
        tmp_path,
        11,
        "profile",
        {"space": TINY_SPACE, "device": {"device": "cpu"}, "warmup": 1, "repeats": 2},
    )
    ex = InlineExecutor()
    ex.start(p)
    done = plane.wait_complete(11, timeout=60)
    assert ex.wait(11, timeout=10) and not ex.alive(11)
    assert done["outcome"] == "succeeded", done["error"]
    table = done["result"]["latency_table"]
    assert table["device_kind"] == "cpu" and table["device_name"]
    assert table["torch_version"] == torch.__version__ and table["method"] == "cpu-perf_counter"
    assert table["entries"]
    assert plane.jobs[11].of_type("step")[-1]["step"] == plane.jobs[11].of_type("step")[-1]["total"]
    # the worker left a marker naming its process
    marker = json.loads(next((run_dir(p) / "workers").glob("attempt1-rank0.json")).read_text())
    assert marker["rank"] == 0 and marker["pid"] > 0


def test_setup_error_completes_failed_with_the_message(plane, tmp_path):
    p = payload(plane, tmp_path, 12, "profile", {"space": "no-such-space"})
    ex = InlineExecutor()
    ex.start(p)
    done = plane.wait_complete(12, timeout=30)
    assert done["outcome"] == "failed"
    assert "no-such-space" in done["error"]
    # the end of the worker's traceback travels with the outcome
    tail = done["traceback_tail"].splitlines()
    assert tail[0].startswith("Traceback") or len(tail) == 50
    assert "no-such-space" in tail[-1]


def test_cancel_stops_the_job_as_cancelled(plane, tmp_path):
    # enough repeats that the profile cannot finish before the flag arrives (on an idle machine
    # a 1-repeat profile could complete first and the test raced)
    p = payload(
        plane,
        tmp_path,
        13,
        "profile",
        {"space": "mbv2-small", "device": {"device": "cpu"}, "warmup": 1, "repeats": 200},
    )
    ex = InlineExecutor()
    ex.start(p)
    deadline = time.monotonic() + 30
    while not plane.jobs[13].events and time.monotonic() < deadline:
        time.sleep(0.05)
    plane.jobs[13].cancel_requested = True  # the control plane's flag reaches the loop
    done = plane.wait_complete(13, timeout=60)
    assert done["outcome"] == "cancelled"
    assert ex.wait(13, timeout=10)


def test_local_cancel_flag(plane, tmp_path):
    p = payload(
        plane,
        tmp_path,
        14,
        "profile",
        {"space": "mbv2-small", "device": {"device": "cpu"}, "warmup": 1, "repeats": 1},
    )
    ex = InlineExecutor()
    ex.start(p)
    ex.cancel(14)
    assert plane.wait_complete(14, timeout=60)["outcome"] == "cancelled"
    ex.shutdown()


def test_latency_search_with_an_incomplete_table_fails_at_setup(plane, tmp_path):
    from densenas_core.latency import LatencyTable

    empty = LatencyTable(device_name="x", device_kind="cpu", batch=1).to_dict()
    spec = {
        "space": TINY_SPACE,
        "cost": {"metric": "latency"},
        "dataset": {"name": "synthetic", "limit_train": 64, "num_classes": 4, "input_size": 8},
    }
    p = payload(plane, tmp_path, 15, "search", spec, latency_table=empty)
    InlineExecutor().start(p)
    done = plane.wait_complete(15, timeout=60)
    assert done["outcome"] == "failed" and "has no entry" in done["error"]
    assert not plane.jobs[15].events  # failed before the loop started


def test_latency_search_without_a_table_fails_at_setup(plane, tmp_path):
    spec = {
        "space": TINY_SPACE,
        "cost": {"metric": "latency"},
        "dataset": {"name": "synthetic", "limit_train": 64, "num_classes": 4, "input_size": 8},
    }
    InlineExecutor().start(payload(plane, tmp_path, 16, "search", spec))
    done = plane.wait_complete(16, timeout=60)
    assert done["outcome"] == "failed" and "latency table" in done["error"]


def test_two_checkpoints_at_one_step_keep_the_later(tmp_path):
    p = JobPayload(
        job_id=6,
        kind="search",
        attempt=2,
        spec={},
        api_url="http://x",
        job_token="t",
        storage_path=str(tmp_path),
    )
    rt = Runtime(p)
    rt.save_checkpoint({"v": 1}, {"global_step": 40, "epoch": 0})  # mid-epoch step 40
    rt.save_checkpoint({"v": 2}, {"global_step": 40, "epoch": 1})  # the epoch ended at 40
    rt.save_checkpoint({"v": 3}, {"global_step": 40, "epoch": 1})
    assert len(list(run_dir(p).glob("checkpoint_*"))) == 2
    state, meta = rt.load_checkpoint()
    assert state == {"v": 3}

"""Where a job runs and what it uses (``job_resources``), and its checkpoints
(``job_checkpoints``), without Ray: the linking of Ray's actor rows to one job, the ranks'
markers, the inline executor's own process, and checkpoints read through pyarrow.fs."""

from __future__ import annotations

import json
import os
import threading

import pyarrow.fs as pafs
import pytest

from workers import executors, storage
from workers.executors import InlineExecutor, job_checkpoints, process_usage
from workers.runtime import write_checkpoint_dir
from workers.storage import CheckpointStore

pytestmark = pytest.mark.timeout(60)


def _gcs(actor_id, cls, name, port, owner_port, pid, state="ALIVE", node="n1"):
    return {
        "ActorID": actor_id,
        "ActorClassName": cls,
        "Name": name,
        "State": state,
        "Pid": pid,
        "Address": {"IPAddress": "10.0.0.1", "Port": port, "NodeID": node},
        "OwnerAddress": {"IPAddress": "10.0.0.1", "Port": owner_port, "NodeID": node},
    }


def test_gcs_rows_link_the_job_actor_its_controller_and_workers_by_owner():
    """Two jobs at once, all actors in one Ray job (the control plane's driver): the owner
    chain, not the job id, says whose controller and workers are whose."""
    table = [
        _gcs("a1", "JobActor", "densenas-job-1", 100, 1, 11),
        _gcs("a2", "JobActor", "densenas-job-2", 200, 1, 21),
        _gcs("c1", "TrainController", "", 101, 100, 12),
        _gcs("c2", "TrainController", "", 201, 200, 22),
        _gcs("w1a", "RayTrainWorker", "", 102, 101, 13),
        _gcs("w1b", "RayTrainWorker", "", 103, 101, 14, node="n2"),
        _gcs("w2", "RayTrainWorker", "", 202, 201, 23),
        _gcs("s1", "SynchronizationActor", "", 104, 101, 15),  # Train's helper: not listed
        _gcs("old", "RayTrainWorker", "", 105, 101, 16, state="DEAD"),
    ]
    rows = [executors._gcs_row(a) for a in table]
    linked = executors._link_job_actors(rows, "densenas-job-1", set())
    assert [(p["role"], p["pid"]) for p in linked] == [
        ("job actor", 11),
        ("train controller", 12),
        ("train worker", 13),
        ("train worker", 14),
    ]
    assert linked[3]["node_id"] == "n2" and linked[3]["node_ip"] == "10.0.0.1"
    assert executors._link_job_actors(rows, "densenas-job-9", set()) == []


def test_state_api_rows_find_workers_by_the_jobs_placement_groups():
    """The state API names no owner: workers are the job's by placement group; no controller."""

    class Actor:
        def __init__(self, cls, name, pid, pg=None):
            self.actor_id, self.class_name, self.name, self.pid = f"id{pid}", cls, name, pid
            self.state, self.node_id, self.placement_group_id = "ALIVE", "n1", pg

    rows = [
        executors._state_api_row(a)
        for a in (
            Actor("JobActor", "densenas-job-1", 11),
            Actor("TrainController", "", 12),
            Actor("RayTrainWorker", "", 13, pg="pg-job-1"),
            Actor("RayTrainWorker", "", 23, pg="pg-job-2"),
        )
    ]
    linked = executors._link_job_actors(rows, "densenas-job-1", {"pg-job-1"})
    assert [(p["role"], p["pid"]) for p in linked] == [("job actor", 11), ("train worker", 13)]


def test_markers_name_each_pid_s_rank_for_the_attempt(tmp_path):
    workers = tmp_path / "densenas-job-4" / "workers"
    workers.mkdir(parents=True)
    for attempt, rank, pid in ((1, 0, 100), (2, 0, 200), (2, 1, 201)):
        marker = {"rank": rank, "pid": pid, "hostname": "h", "node_id": "n", "device": "cpu"}
        (workers / f"attempt{attempt}-rank{rank}.json").write_text(json.dumps(marker))
    (workers / "attempt2-rank2.json.tmp").write_text("{")  # half written: not a marker
    assert sorted(executors._markers(str(tmp_path), 4, 2)) == [200, 201]
    assert sorted(executors._markers(str(tmp_path), 4, 1)) == [100]
    assert sorted(executors._markers(str(tmp_path), 4, None)) == [200, 201]  # the newest
    assert sorted(executors._markers(f"file://{tmp_path}", 4, 2)) == [200, 201]
    assert executors._markers("s3://bucket/x", 4, 2) == {}  # no markers on remote storage
    assert executors._markers(str(tmp_path), 5, 2) == {}


def test_process_usage_measures_this_process():
    usage = process_usage([os.getpid(), 2**22 + 7], interval_s=0.05)  # the second: no such pid
    mine = usage[os.getpid()]
    assert list(usage) == [os.getpid()]
    assert mine["rss_bytes"] > 10 * 1024**2 and mine["num_threads"] >= 1
    assert mine["cpu_percent"] >= 0


def test_inline_executor_reports_its_own_process_while_the_job_runs():
    ex = InlineExecutor()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    ex._jobs[3] = (thread, stop)
    try:
        out = ex.job_resources(3)
        (proc,) = out["processes"]
        assert out["executor"] == "inline" and out["message"] is None
        assert proc["role"] == "inline thread" and proc["pid"] == os.getpid()
        assert proc["rss_bytes"] > 0 and "whole process" in proc["usage_source"]
        assert set(proc) == {"role", *executors.PROCESS_FIELDS}
    finally:
        stop.set()
        thread.join()
    gone = ex.job_resources(3)
    assert gone["processes"] == [] and "no thread" in gone["message"]


def _write(store: CheckpointStore, name: str, step: int, epoch: int, attempt: int) -> None:
    with store.staging() as tmp:
        write_checkpoint_dir(tmp, {"w": list(range(step))}, {"global_step": step, "epoch": epoch,
                                                               "attempt": attempt})  # fmt: skip
        store.publish(tmp, name)


@pytest.mark.parametrize("form", ["path", "file-uri"])
def test_job_checkpoints_lists_complete_ones_oldest_first(tmp_path, form):
    base = str(tmp_path / "job-6") if form == "path" else f"file://{tmp_path}/job-6"
    store = CheckpointStore(storage.join(base, "densenas-job-6"))
    _write(store, "checkpoint_b", 20, 2, 2)
    _write(store, "checkpoint_a", 10, 1, 1)
    (tmp_path / "job-6" / "densenas-job-6" / "checkpoint_c").mkdir()  # no files: not complete
    rows = job_checkpoints(base, 6)
    assert [(r["name"], r["global_step"], r["epoch"], r["attempt"]) for r in rows] == [
        ("checkpoint_a", 10, 1, 1),
        ("checkpoint_b", 20, 2, 2),
    ]
    on_disk = tmp_path / "job-6" / "densenas-job-6" / "checkpoint_b"
    assert rows[1]["size_bytes"] == sum(f.stat().st_size for f in on_disk.iterdir())
    assert rows[1]["uri"] == storage.join(base, "densenas-job-6", "checkpoint_b")
    assert rows[1]["created_at"] == pytest.approx((on_disk / "meta.json").stat().st_mtime)
    assert job_checkpoints(str(tmp_path / "nothing"), 6) == []


def test_job_checkpoints_read_through_a_filesystem_that_is_not_local(tmp_path, monkeypatch):
    """As on S3/GCS: the listing, sizes and meta.json come through pyarrow.fs, not paths."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    monkeypatch.setattr(storage, "resolve", lambda location: (fs, str(location)[len("s3://b/") :]))
    _write(CheckpointStore("p/job-8/densenas-job-8", filesystem=fs), "checkpoint_x", 5, 0, 1)
    (row,) = job_checkpoints("s3://b/p/job-8", 8)
    assert (row["uri"], row["global_step"], row["attempt"]) == (
        "s3://b/p/job-8/densenas-job-8/checkpoint_x",
        5,
        1,
    )
    assert row["size_bytes"] > 0

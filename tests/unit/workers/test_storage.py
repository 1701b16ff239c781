"""Checkpoint storage as a URI (workers.storage): the same checkpoints through a plain path, a
``file://`` URI and a pyarrow filesystem that is not the local one (SubTreeFileSystem: the
download/upload path object stores take)."""

from __future__ import annotations

import json
import time

import pyarrow.fs as pafs
import pytest
import torch

from tests.support.fake_control_plane import FakeControlPlane
from tests.support.tiny_specs import tiny_space
from workers import storage
from workers.executors import InlineExecutor
from workers.payload import JobPayload
from workers.runtime import (
    Runtime,
    checkpoint_store,
    find_latest_checkpoint,
    read_checkpoint_dir,
    run_dir,
    run_location,
    write_checkpoint_dir,
)
from workers.storage import CheckpointStore, check_storage_uri, join, local_copy

pytestmark = pytest.mark.timeout(120)


def _payload(storage: str, attempt: int = 1, job_id: int = 5, **kw) -> JobPayload:
    return JobPayload(
        job_id=job_id,
        kind="search",
        attempt=attempt,
        spec={},
        api_url="http://x",
        job_token="t",
        storage_path=storage,
        **kw,
    )


@pytest.mark.parametrize(
    "base,expect",
    [
        ("/data/ckpt", "/data/ckpt/job-3"),
        ("/data/ckpt/", "/data/ckpt/job-3"),
        ("file:///data/ckpt", "file:///data/ckpt/job-3"),
        ("file:///data/ckpt/", "file:///data/ckpt/job-3"),
        ("file:///", "file:///job-3"),
        ("s3://bucket", "s3://bucket/job-3"),
        ("s3://bucket/", "s3://bucket/job-3"),
        ("s3://bucket/a/b//", "s3://bucket/a/b/job-3"),
        ("gs://bucket/prefix", "gs://bucket/prefix/job-3"),
        (
            "s3://bucket/p?region=eu-west-1&endpoint_override=minio:9000",
            "s3://bucket/p/job-3?region=eu-west-1&endpoint_override=minio:9000",
        ),
    ],
)
def test_join_one_slash_between_parts(base, expect):
    assert join(base, "job-3") == expect


def test_check_storage_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_storage_uri("rel/ckpt") == str(tmp_path / "rel" / "ckpt")
    assert check_storage_uri(" s3://b/p ") == "s3://b/p"
    for bad, needle in [
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("s3://", "no bucket"),
        ("file://relative/x", "absolute path"),
        ("s3:bucket", "without '//'"),
        ("://x", "unsupported scheme"),
        ("", "empty"),
    ]:
        with pytest.raises(ValueError, match=needle):
            check_storage_uri(bad)


def test_file_uri_end_to_end_keeps_two_and_a_retry_loads_the_latest(tmp_path):
    uri = f"file://{tmp_path}/store"
    first = _payload(uri)
    rt = Runtime(first)
    saved = {}
    for step in (10, 20, 30):
        saved[step] = {"w": torch.full((3,), float(step)), "step": step}
        rt.save_checkpoint(saved[step], {"global_step": step, "epoch": 0})
    directory = tmp_path / "store" / "densenas-job-5"
    assert run_dir(first) == directory and run_location(first) == f"{uri}/densenas-job-5"
    ckpts = sorted(p.name for p in directory.iterdir())
    assert len(ckpts) == 2 and all(n.startswith("checkpoint_") for n in ckpts)  # no leftovers
    assert rt.load_checkpoint() is None  # attempt 1 never resumes
    state, meta = Runtime(_payload(uri, attempt=2)).load_checkpoint()
    assert meta == {"global_step": 30, "epoch": 0}
    assert torch.equal(state["w"], saved[30]["w"]) and state["step"] == 30
    # the same checkpoint, whichever way it is named
    latest = find_latest_checkpoint(run_location(first))
    assert latest == find_latest_checkpoint(directory) and latest.parent == directory
    assert read_checkpoint_dir(f"file://{latest}")[1]["global_step"] == 30


@pytest.mark.parametrize("renames", [True, False], ids=["rename", "object-store"])
def test_a_filesystem_that_is_not_local_goes_through_downloads_and_uploads(
    tmp_path, monkeypatch, renames
):
    """SubTreeFileSystem over tmp_path: the store cannot hand out local paths, so reads
    download and writes upload — to a temporary name then renamed, or (as on S3/GCS, which
    move single objects only) straight to the final name with meta.json last."""
    monkeypatch.setattr(storage, "_renames_directories", lambda fs: renames)
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = CheckpointStore("run", filesystem=fs)
    assert store.local_dir is None and store.latest() is None  # nothing there yet
    for step in (1, 2, 3):
        with store.staging() as tmp:
            assert not tmp.is_relative_to(tmp_path)  # staged outside the store
            write_checkpoint_dir(tmp, {"v": step}, {"global_step": step})
            store.publish(tmp, f"checkpoint_{step}")
    assert store.prune(2) == ["checkpoint_1"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_2", "checkpoint_3"]
    latest = store.latest()
    assert (latest.name, latest.global_step, latest.uri) == ("checkpoint_3", 3, "run/checkpoint_3")
    with store.open(latest) as local:
        assert not local.is_relative_to(tmp_path)  # a download
        assert read_checkpoint_dir(local) == ({"v": 3}, {"global_step": 3})
    assert not local.exists()  # removed on exit
    # a name taken already gets a suffix rather than mixing two checkpoints
    with store.staging() as tmp:
        write_checkpoint_dir(tmp, {"v": 4}, {"global_step": 3})
        assert store.publish(tmp, "checkpoint_3").name == "checkpoint_3_"
    assert store.latest().name == "checkpoint_3_"  # same step, written later


def test_partial_and_unreadable_checkpoints_are_ignored(tmp_path):
    uri = f"file://{tmp_path}"
    rt = Runtime(_payload(uri, attempt=2))
    rt.save_checkpoint({"v": 1}, {"global_step": 10})
    directory = run_dir(rt.payload)
    # newer-looking but incomplete: no meta.json (state.pt written first, then interrupted) …
    (directory / "checkpoint_9999-12-31_00-00-00.000000").mkdir()
    torch.save({"v": 99}, directory / "checkpoint_9999-12-31_00-00-00.000000" / "state.pt")
    # … no state.pt; a meta.json that is not JSON; a stray file; an upload in progress
    (directory / "checkpoint_b").mkdir()
    (directory / "checkpoint_b" / "meta.json").write_text(json.dumps({"global_step": 50}))
    (directory / "checkpoint_c").mkdir()
    torch.save({"v": 98}, directory / "checkpoint_c" / "state.pt")
    (directory / "checkpoint_c" / "meta.json").write_text("{trunc")
    (directory / "checkpoint_d").write_text("not a directory")
    (directory / ".ckpt-123").mkdir()
    for location in (run_location(rt.payload), directory):
        assert read_checkpoint_dir(find_latest_checkpoint(location))[0] == {"v": 1}
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert [
        c.global_step for c in CheckpointStore(directory.name, filesystem=fs).checkpoints()
    ] == [10]
    assert rt.load_checkpoint() == ({"v": 1}, {"global_step": 10})
    assert find_latest_checkpoint(tmp_path / "nowhere") is None
    assert find_latest_checkpoint(directory / "checkpoint_d") is None  # a file, not a directory


def test_local_copy_of_a_remote_looking_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("x")
    with local_copy(f"file://{tmp_path}/d") as local:
        assert local == tmp_path / "d"  # local: no copy
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with local_copy("d", fs) as local:
        assert local != tmp_path / "d" and (local / "a.txt").read_text() == "x"


def test_markers_are_skipped_for_remote_storage():
    rt = Runtime(_payload("s3://bucket/prefix"))
    assert run_dir(rt.payload) is None
    rt.write_marker()  # no error, nothing written (and no network)
    assert checkpoint_store(rt.payload).location == "s3://bucket/prefix/densenas-job-5"


@pytest.mark.slow  # ~8 s: a real (tiny) search
def test_inline_search_checkpoints_land_under_a_file_uri(tmp_path):
    """The real job body through InlineExecutor with ``storage_path`` a file:// URI."""
    spec = {
        "space": tiny_space(input_size=8),
        "dataset": {"name": "synthetic", "limit_train": 48, "num_classes": 4, "input_size": 8},
        "epochs": 1,
        "warmup_epochs": 0,
        "batch_size": 16,
        "checkpoint_every": 1,
    }
    uri = f"file://{tmp_path}/store/job-21"
    with FakeControlPlane() as plane:
        plane.add_job(21, token="t")
        p = JobPayload(
            job_id=21,
            kind="search",
            attempt=1,
            spec=spec,
            api_url=plane.url,
            job_token="t",
            storage_path=uri,
        )
        ex = InlineExecutor()
        started = time.monotonic()
        ex.start(p)
        assert ex.wait(21, timeout=100)
        done = plane.jobs[21].completions[-1]
    assert done["outcome"] == "succeeded", done["error"]
    assert time.monotonic() - started < 60
    ckpts = list((tmp_path / "store" / "job-21" / "densenas-job-21").glob("checkpoint_*"))
    assert 1 <= len(ckpts) <= 2
    state, meta = read_checkpoint_dir(find_latest_checkpoint(run_location(p)))
    assert meta["global_step"] > 0 and state

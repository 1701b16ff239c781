"""DENSENAS_STORAGE_URI: where job checkpoints live (a shared path or a pyarrow URI), checked
when the settings load; a job's storage_path is ``<storage>/job-<id>``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.dispatcher import build_payload
from service.models import Job
from service.settings import Settings


def test_unset_is_the_absolute_checkpoints_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DENSENAS_STORAGE_URI", raising=False)
    s = Settings(data_dir="rel")
    assert s.storage_uri is None
    assert s.checkpoint_storage == str((tmp_path / "rel" / "checkpoints").resolve())
    assert s.job_storage_path(7) == str((tmp_path / "rel" / "checkpoints" / "job-7").resolve())
    monkeypatch.setenv("DENSENAS_STORAGE_URI", "")  # set but empty: as unset
    assert Settings(data_dir="rel").storage_uri is None


@pytest.mark.parametrize(
    "value,job_path",
    [
        ("file:///mnt/shared/ckpt", "file:///mnt/shared/ckpt/job-7"),
        ("file:///mnt/shared/ckpt/", "file:///mnt/shared/ckpt/job-7"),
        ("s3://bucket", "s3://bucket/job-7"),
        ("s3://bucket/densenas/", "s3://bucket/densenas/job-7"),
        ("gs://bucket/a/b", "gs://bucket/a/b/job-7"),
        (
            "s3://bucket/p?endpoint_override=minio:9000",
            "s3://bucket/p/job-7?endpoint_override=minio:9000",
        ),
    ],
)
def test_uris_are_accepted_from_the_environment(monkeypatch, value, job_path):
    monkeypatch.setenv("DENSENAS_STORAGE_URI", value)
    s = Settings()
    assert s.storage_uri == value and s.checkpoint_storage == value
    assert s.job_storage_path(7) == job_path


def test_a_plain_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DENSENAS_STORAGE_URI", "shared/ckpt/")
    s = Settings()
    assert s.storage_uri == str(tmp_path / "shared" / "ckpt")
    assert s.job_storage_path(3) == str(tmp_path / "shared" / "ckpt" / "job-3")


@pytest.mark.parametrize(
    "value,needle",
    [
        ("ftp://host/ckpt", "unsupported scheme 'ftp'"),
        ("http://bucket/x", "unsupported scheme 'http'"),
        ("s3://", "no bucket"),
        ("file://relative/dir", "absolute path"),
        ("s3:bucket/prefix", "without '//'"),
        ("::://garbage", "unsupported scheme"),
    ],
)
def test_unknown_or_malformed_uris_are_refused_naming_the_variable(monkeypatch, value, needle):
    monkeypatch.setenv("DENSENAS_STORAGE_URI", value)
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "DENSENAS_STORAGE_URI" in str(e.value) and needle in str(e.value)


def test_the_payload_carries_the_joined_storage_path(tmp_path):
    job = Job(id=12, kind="search", attempt=2, spec={"epochs": 1})
    s = Settings(data_dir=tmp_path, storage_uri="s3://bucket/densenas/")
    assert build_payload(None, job, "tok", s).storage_path == "s3://bucket/densenas/job-12"
    s = Settings(data_dir=tmp_path)
    assert build_payload(None, job, "tok", s).storage_path == str(
        tmp_path.resolve() / "checkpoints" / "job-12"
    )

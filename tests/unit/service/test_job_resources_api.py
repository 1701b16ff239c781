"""GET /v1/jobs/{id}/resources and /checkpoints (issue 15): what the executor says about a
running job's processes — or why it cannot, never a 500 — and the checkpoints in its storage."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

from service.models import Job
from workers.executors import InlineExecutor
from workers.runtime import write_checkpoint_dir
from workers.storage import CheckpointStore, join

pytestmark = pytest.mark.timeout(60)


class ResourcesExecutor:
    """Answers job_resources as RayExecutor does, or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.asked: list[tuple[int, str | None]] = []

    def job_resources(self, job_id: int, storage_path: str | None = None) -> dict[str, Any]:
        self.asked.append((job_id, storage_path))
        if self.error is not None:
            raise self.error
        return {
            "executor": "ray",
            "source": "gcs-actor-table",
            "attempt": 1,
            "message": None,
            "processes": [
                {"role": "job actor", "pid": 11, "node_id": "n1", "node_ip": "10.0.0.1"},
                {"role": "rank 0", "rank": 0, "pid": 13, "cpu_percent": 97.5, "rss_bytes": 5},
            ],
        }


def _job(client, headers, session_factory, status: str = "running", **values: Any) -> int:
    r = client.post("/v1/jobs", headers=headers, json={"kind": "search"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with session_factory() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=status, **values))
        s.commit()
    return job_id


def _use(app, executor: Any) -> None:
    """A stand-in dispatcher: the route asks ``dispatcher.executor``; nothing is dispatched."""
    app.state.dispatcher = SimpleNamespace(executor=executor, wake=lambda: None, stop=lambda: None)


@pytest.fixture
def settings(make_settings):
    return make_settings(ray_dashboard_url="http://head:8265")


def test_a_running_job_lists_what_the_executor_says(client, app, user, session_factory, settings):
    ex = ResourcesExecutor()
    _use(app, ex)
    job_id = _job(client, user, session_factory)
    r = client.get(f"/v1/jobs/{job_id}/resources", headers=user)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["executor"] == "ray" and body["source"] == "gcs-actor-table"
    assert body["ray_dashboard_url"] == "http://head:8265" and body["message"] is None
    assert [(p["role"], p["pid"]) for p in body["processes"]] == [("job actor", 11), ("rank 0", 13)]
    assert body["processes"][1]["cpu_percent"] == 97.5
    assert ex.asked == [(job_id, settings.job_storage_path(job_id))]


def test_an_executor_that_fails_is_a_message_not_a_500(client, app, user, session_factory):
    _use(app, ResourcesExecutor(ConnectionError("GCS unreachable")))
    job_id = _job(client, user, session_factory)
    body = client.get(f"/v1/jobs/{job_id}/resources", headers=user).json()
    assert body["processes"] == [] and "GCS unreachable" in body["message"]


def test_no_executor_here_says_so(client, app, user, session_factory):
    job_id = _job(client, user, session_factory)
    body = client.get(f"/v1/jobs/{job_id}/resources", headers=user).json()
    assert body["executor"] == "none" and "no executor" in body["message"]
    _use(app, object())  # one without job_resources (a test double)
    body = client.get(f"/v1/jobs/{job_id}/resources", headers=user).json()
    assert body["executor"] == "object" and body["processes"] == []


def test_a_finished_job_shows_its_stored_workers(client, app, user, session_factory):
    _use(app, ResourcesExecutor())
    workers = [{"rank": 0, "world_size": 1, "node_id": "n", "hostname": "h", "pid": 9}]
    job_id = _job(client, user, session_factory, "succeeded", result={"workers": workers})
    body = client.get(f"/v1/jobs/{job_id}/resources", headers=user).json()
    assert body["workers"] == workers and body["processes"] == []
    assert body["message"] == "the job is succeeded: no live processes"


def test_the_inline_executor_answers_with_its_process(client, app, user, session_factory):
    ex = InlineExecutor()
    _use(app, ex)
    job_id = _job(client, user, session_factory)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    ex._jobs[job_id] = (thread, stop)
    try:
        body = client.get(f"/v1/jobs/{job_id}/resources", headers=user).json()
    finally:
        stop.set()
        thread.join()
    (proc,) = body["processes"]
    assert body["executor"] == "inline" and proc["role"] == "inline thread"
    assert proc["rss_bytes"] > 0


def test_another_projects_job_is_not_found(client, app, user, other, session_factory):
    _use(app, ResourcesExecutor())
    job_id = _job(client, user, session_factory)
    for route in ("resources", "checkpoints"):
        r = client.get(f"/v1/jobs/{job_id}/{route}", headers=other)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/problem+json")


def test_checkpoints_lists_the_jobs_complete_checkpoints(client, user, session_factory, settings):
    job_id = _job(client, user, session_factory, "succeeded")
    assert client.get(f"/v1/jobs/{job_id}/checkpoints", headers=user).json()["checkpoints"] == []
    store = CheckpointStore(join(settings.job_storage_path(job_id), f"densenas-job-{job_id}"))
    for step in (40, 80):
        with store.staging() as tmp:
            write_checkpoint_dir(tmp, {"w": step}, {"global_step": step, "epoch": 1, "attempt": 2})
            store.publish(tmp, f"checkpoint_{step}")
    r = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=user)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["storage_path"] == settings.job_storage_path(job_id) and body["message"] is None
    assert [(c["name"], c["global_step"], c["attempt"]) for c in body["checkpoints"]] == [
        ("checkpoint_40", 40, 2),
        ("checkpoint_80", 80, 2),
    ]
    assert body["checkpoints"][0]["size_bytes"] > 0
    assert (
        body["checkpoints"][0]["created_at"].endswith("Z")
        or "+00:00" in (body["checkpoints"][0]["created_at"])
    )


def test_unreadable_storage_is_a_message(client, user, session_factory, monkeypatch):
    """An object store out of reach (pyarrow raises OSError) reads as a message, not a 500."""
    import workers.executors

    def unreachable(storage_path: str, job_id: int) -> list:
        raise OSError("When listing objects under key 'x': AWS Error NETWORK_CONNECTION")

    monkeypatch.setattr(workers.executors, "job_checkpoints", unreachable)
    job_id = _job(client, user, session_factory, "succeeded")
    r = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=user)
    assert r.status_code == 200, r.text
    assert r.json()["checkpoints"] == [] and "NETWORK_CONNECTION" in r.json()["message"]

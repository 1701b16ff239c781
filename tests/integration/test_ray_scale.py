"""Issue 16 on a real local Ray: one small search through RayExecutor (``python -m bench.scale
memory`` measures the same run). Its job actor never loads torch (the trainer is built from
workers.torch_backend; the job bodies load on the Train worker), ``alive_many`` answers from
one listing of named actors, and the sweep leaves the running attempt's actor alone."""

from __future__ import annotations

import pytest

from tests.support import ray_env  # noqa: F401  (first: the environment of the Ray processes)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def test_a_job_actor_stays_free_of_torch_and_alive_many_sees_it():
    from bench.scale import job_memory

    res = job_memory(timeout=600)
    assert res["outcome"] == "succeeded", res
    assert res["alive_many([1, 2, 3])"] == [1]
    assert res["sweep_killed"] == [[], []] and res["alive_after_sweeps"]
    roles = res["roles"]
    assert not roles["job actor"]["torch_loaded"], roles
    assert roles["Train worker"]["torch_loaded"], roles  # the job bodies ran there
    assert roles["job actor"]["rss_mib"] < roles["Train controller"]["rss_mib"]

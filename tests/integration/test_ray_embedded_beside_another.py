"""The embedded default (no RAY_ADDRESS) while another Ray runs on the machine: a job still
succeeds on a private in-process Ray (``ray.init(address="local")``). A bare
``ray.init(num_cpus=…)`` would join the other Ray, found through
``<temp>/ray/ray_current_cluster``, and fail ("When
connecting to an existing cluster, num_cpus and num_gpus must not be provided")."""

from __future__ import annotations

import time

import pytest

from tests.support import ray_env  # noqa: F401  (first: the environment of the Ray processes)
from tests.support.fake_control_plane import FakeControlPlane
from tests.support.net import free_ports
from tests.support.ray_procs import Procs, clean_env
from tests.support.tiny_specs import tiny_space
from workers.executors import RayExecutor
from workers.payload import JobPayload

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.flaky(reruns=2, reruns_delay=2),
]

MB = 1024**2
SEARCH = {
    "space": tiny_space(input_size=16),
    "dataset": {"name": "synthetic", "limit_train": 160, "num_classes": 4, "input_size": 16},
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 16,
    "seed": 0,
    "bn_calibration": 0,
    "num_workers": 1,
}


def test_embedded_default_succeeds_beside_another_ray(tmp_path, monkeypatch):
    import ray

    assert not ray.is_initialized(), "another test left its Ray connected"
    with Procs() as procs:
        # The other Ray: `ray start --head` on loopback with its own temp root, which the test
        # then makes this process's default (RAY_TMPDIR) — as /tmp/ray is on a user's machine.
        root = procs.temp_dir("dn-other-")
        (port,) = free_ports(1)
        other = procs.start(
            "other-ray",
            [
                "ray",
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=1",
                f"--object-store-memory={80 * MB}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            clean_env(
                RAY_TMPDIR=str(root),
                RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                RAY_USAGE_STATS_ENABLED="0",
            ),
            tmp_path,
            owned_dirs=[root],
        )
        other.wait_for_log("Ray runtime started", 120)
        monkeypatch.setenv("RAY_TMPDIR", str(root))
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        other_address = f"127.0.0.1:{port}"
        assert (root / "ray" / "ray_current_cluster").read_text().strip() == other_address
        # the cluster a bare ray.init() would join here
        from ray._private.services import get_ray_address_from_environment

        assert get_ray_address_from_environment(None, None) == other_address

        ex = RayExecutor(num_cpus=2, object_store_memory=150 * MB)
        try:
            with FakeControlPlane() as plane:
                plane.add_job(301, token="tok")
                payload = JobPayload(
                    job_id=301,
                    kind="search",
                    attempt=1,
                    spec=SEARCH,
                    api_url=plane.url,
                    job_token="tok",
                    storage_path=str(tmp_path / "storage"),
                )
                t0 = time.monotonic()
                ex.start(payload)
                assert ex.cluster_address is None and ex._started_ray
                ours = ray.get_runtime_context().gcs_address
                assert ours != other_address
                done = plane.wait_complete(301, 400)
                print(
                    f"\n[timing] embedded job done in {time.monotonic() - t0:.1f}s on a "
                    f"private Ray ({ours}) beside {other_address}"
                )
            assert done["outcome"] == "succeeded", done["error"]
            assert done["result"]["metrics"]["world_size"] == 1
            assert other.running()  # the other Ray was left alone
        finally:
            ex.shutdown()

"""How RayExecutor reaches Ray (``ray.init`` recorded, nothing started): the embedded default
always starts a private single-machine Ray (``address="local"``, cluster mode off in this
process only then), an existing cluster is joined as given (``ray://`` = the Ray Client, with
retries of a failed connection), and joining one never touches the cluster-mode switch."""

from __future__ import annotations

import os
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from workers import executors  # noqa: E402
from workers.executors import RayExecutor  # noqa: E402

SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class FakeRay:
    def __init__(self, failures: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failures = failures
        self.initialized = False
        self.shutdowns = 0

    def init(self, **kw: Any) -> None:
        self.calls.append(kw)
        if len(self.calls) <= self.failures:
            self.initialized = True  # a half-made client context, as Ray leaves it
            raise ConnectionAbortedError("Initialization failure from server")
        self.initialized = True

    def is_initialized(self) -> bool:
        return self.initialized

    def shutdown(self) -> None:
        self.initialized = False
        self.shutdowns += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    def make(failures: int = 0) -> FakeRay:
        f = FakeRay(failures)
        for name in ("init", "is_initialized", "shutdown"):
            monkeypatch.setattr(ray, name, getattr(f, name))
        monkeypatch.setattr(executors, "CLIENT_CONNECT_BACKOFF_S", 0.0)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        monkeypatch.delenv(SWITCH, raising=False)
        return f

    return make


def test_embedded_default_starts_a_private_local_ray(fake, monkeypatch) -> None:
    f = fake()
    RayExecutor(num_cpus=2, object_store_memory=100 * 1024**2)._ray()
    (call,) = f.calls
    # "local": never the Ray in /tmp/ray/ray_current_cluster, which would refuse num_cpus
    assert call["address"] == "local"
    assert call["num_cpus"] == 2 and call["include_dashboard"] is False
    assert call["namespace"] == "densenas"
    assert os.environ[SWITCH] == "0"  # set for the embedded Ray's processes


@pytest.mark.parametrize("address", ["ray://ray-head:10001", "ray-head:6379"])
def test_a_cluster_is_joined_as_given_and_cluster_mode_left_alone(fake, address) -> None:
    f = fake()
    RayExecutor(address=address)._ray()
    (call,) = f.calls
    assert call == {"address": address, "namespace": "densenas", "log_to_driver": False}
    assert SWITCH not in os.environ


def test_ray_address_from_the_environment(fake, monkeypatch) -> None:
    f = fake()
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    ex = RayExecutor()
    assert ex.cluster_address == "ray://head:10001"
    ex._ray()
    assert f.calls[0]["address"] == "ray://head:10001" and "num_cpus" not in f.calls[0]


def test_a_failed_ray_client_connection_is_retried(fake) -> None:
    f = fake(failures=2)
    RayExecutor(address="ray://head:10001")._ray()
    assert len(f.calls) == 3 and f.shutdowns == 2 and f.initialized


def test_ray_client_gives_up_after_its_attempts(fake) -> None:
    f = fake(failures=99)
    with pytest.raises(ConnectionAbortedError):
        RayExecutor(address="ray://head:10001")._ray()
    assert len(f.calls) == executors.CLIENT_CONNECT_ATTEMPTS


def test_a_gcs_address_is_not_retried(fake) -> None:
    f = fake(failures=1)
    with pytest.raises(ConnectionAbortedError):
        RayExecutor(address="head:6379")._ray()
    assert len(f.calls) == 1

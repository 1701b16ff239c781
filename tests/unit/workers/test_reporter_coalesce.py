"""Issue 16: a worker whose events reach the control plane sends no separate heartbeat (the
events refreshed it, and told of a cancel); one that goes quiet heartbeats again."""

from __future__ import annotations

import time

from tests.support.fake_control_plane import FakeControlPlane
from tests.support.waiting import wait_for
from workers.reporter import HttpReporter


def test_heartbeats_are_coalesced_with_delivered_events():
    with FakeControlPlane() as plane:
        plane.add_job(7, token="tok")
        rep = HttpReporter(
            plane.url, 7, "tok", batch_size=100, flush_interval_s=0.05, heartbeat_interval_s=0.3
        )
        try:
            t_end = time.monotonic() + 1.5
            step = 0
            while time.monotonic() < t_end:  # an event every 20 ms: flushed every ~50 ms
                rep.report("step", phase="weights", epoch=0, step=step, loss=1.0)
                step += 1
                time.sleep(0.02)
            rep.flush()
            with plane.lock:
                routes = [r for r, _ in plane.requests]
            assert routes.count("events") >= 5
            assert "heartbeat" not in routes  # every beat fell within a delivery
            # quiet now: the background thread heartbeats again
            wait_for(lambda: ("heartbeat", 200) in plane.requests, timeout=5)
        finally:
            rep.close()

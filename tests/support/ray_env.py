"""Imported by the Ray tests before ``workers``: the environment their Ray and worker
processes inherit (fast reports, heartbeats and health checks; Ray on loopback). Importing it
is its effect (``from tests.support import ray_env  # noqa: F401``)."""

from __future__ import annotations

import os

for key, value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "DENSENAS_REPORT_FLUSH_S": "0.2",
    "DENSENAS_HEARTBEAT_S": "1",
    "DENSENAS_CANCEL_GRACE_S": "2",
}.items():
    os.environ.setdefault(key, value)

"""Imported by the Ray tests before ``workers``: the environment their Ray and worker
processes inherit (fast reports, heartbeats and health checks; Ray on loopback), and the
worker-test helpers (``fake_control_plane``, ``tiny_specs``) on ``sys.path``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                   "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                   "DENSENAS_REPORT_FLUSH_S": "0.2", "DENSENAS_HEARTBEAT_S": "1",
                   "DENSENAS_CANCEL_GRACE_S": "2"}.items():
    os.environ.setdefault(key, value)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "workers"))

"""Worker tests: report quickly so tests need not wait for production intervals."""

from __future__ import annotations

import os

os.environ.setdefault("DENSENAS_REPORT_FLUSH_S", "0.2")
os.environ.setdefault("DENSENAS_HEARTBEAT_S", "0.5")

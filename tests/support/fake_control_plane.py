"""A tiny real HTTP server speaking the control plane's worker routes (docs/DESIGN.md).

Test infrastructure, not a stub in the product: workers talk to it over real sockets, exactly as
to the service. It dedupes events by ``seq`` like the real one, can fail the next N requests
with 503, raise the cancel flag, and records every request so tests can assert on the stream.
Used by the worker unit tests (tests/unit/workers) and the Ray integration tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ROUTE = re.compile(r"^/v1/jobs/(\d+)/(events|heartbeat|complete)$")


@dataclass
class JobState:
    token: str
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    batches: list[list[int]] = field(default_factory=list)
    heartbeats: int = 0
    cancel_requested: bool = False
    completions: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e["data"] for _, e in sorted(self.events.items()) if e["type"] == event_type]


class FakeControlPlane:
    def __init__(self) -> None:
        self.jobs: dict[int, JobState] = {}
        self.fail_next = 0  # answer this many upcoming requests with 503
        self.requests: list[tuple[str, int]] = []  # (route, status) in arrival order
        self.lock = threading.Lock()
        self.completed = threading.Condition(self.lock)
        plane = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = plane._handle(self.path, self.headers.get("Authorization", ""), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeControlPlane:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_job(self, job_id: int, token: str = "tok") -> JobState:
        with self.lock:
            self.jobs[job_id] = JobState(token=token)
            return self.jobs[job_id]

    def wait_complete(self, job_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.completed:
            while not self.jobs[job_id].completions:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {job_id} did not complete within {timeout}s")
                self.completed.wait(left)
            return self.jobs[job_id].completions[0]

    def _handle(self, path: str, auth: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        match = _ROUTE.match(path)
        with self.lock:
            route = match.group(2) if match else path
            if self.fail_next > 0:
                self.fail_next -= 1
                self.requests.append((route, 503))
                return 503, {"title": "Service Unavailable"}
            if not match or int(match.group(1)) not in self.jobs:
                self.requests.append((route, 404))
                return 404, {"title": "Not Found"}
            job = self.jobs[int(match.group(1))]
            if auth != f"Bearer {job.token}":
                self.requests.append((route, 401))
                return 401, {"title": "Unauthorized"}
            if job.status != "running":
                self.requests.append((route, 409))
                return 409, {"title": "Conflict", "detail": f"job is {job.status}"}
            body = json.loads(raw or b"{}")
            self.requests.append((route, 200))
            if route == "events":
                accepted = duplicates = 0
                seqs = []
                for event in body["events"]:
                    seqs.append(event["seq"])
                    if event["seq"] in job.events:
                        duplicates += 1
                    else:
                        job.events[event["seq"]] = event
                        accepted += 1
                job.duplicates += duplicates
                job.batches.append(seqs)
                job.heartbeats += 1
                return 200, {
                    "accepted": accepted,
                    "duplicates": duplicates,
                    "cancel_requested": job.cancel_requested,
                }
            if route == "heartbeat":
                job.heartbeats += 1
                return 200, {"cancel_requested": job.cancel_requested, "status": job.status}
            job.completions.append(body)
            job.status = body["outcome"]
            self.completed.notify_all()
            return 200, {"status": job.status}

"""``GET /v1/jobs/{id}`` served below FastAPI: the one read every watcher polls.

FastAPI's routing, dependency solving and exception layers cost, before a route runs, several
times the CPU of a plain ASGI function sending the same response — about a third of the
per-request budget for 1,500 job reads a second on one worker (figures: BENCHMARKS.md,
"Findings for the core and service engineers", item 2). This ASGI layer sits after
:class:`~service.auth.AuthMiddleware` and answers exactly ``GET /v1/jobs/<digits>`` with the
same function the FastAPI route calls (:func:`service.jobs.job_json`), the same guard
(:func:`~service.auth.require_user`) and the same problem+json errors; everything else,
including malformed ids, goes on to FastAPI. The FastAPI route stays the documented contract
(OpenAPI) and a test asserts both answer byte-for-byte alike. ``DENSENAS_HOT_PATH=false`` turns
this layer off.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import jobs
from .auth import require_user
from .errors import DenseNASError, problem_response, unexpected_response
from .reads import Reader

_JOB = re.compile(r"/v1/jobs/([0-9]{1,18})")


@dataclass(frozen=True)
class RouteLabel:
    """What ``scope["route"]`` carries for the metrics: the route's path template."""

    path: str


_LABEL = RouteLabel("/v1/jobs/{job_id}")


class JobReadFastPath:
    def __init__(self, app: Any, reader: Callable[[], Reader]) -> None:
        self.app = app
        self._reader = reader

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        m = _JOB.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if m is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope["route"] = _LABEL
        try:
            principal = require_user(scope["state"]["principal"])
            body = (await jobs.job_json(self._reader(), principal, int(m[1]))).encode()
        except DenseNASError as e:
            await problem_response(e)(scope, receive, send)
            return
        except Exception as e:  # noqa: BLE001 - a 503 when the database is away, else a 500
            await unexpected_response(e, "GET", scope["path"])(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

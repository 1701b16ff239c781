"""Request body size limit (413), enforced before any route parses JSON.

A declared ``Content-Length`` over the limit is refused without reading; a chunked body is read
up to the limit and refused as soon as it passes it, then replayed to the app. Either way a
worker or client bug cannot make the API buffer gigabytes.
"""

from __future__ import annotations

from typing import Any

from .errors import PayloadTooLarge, problem_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodySizeLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        err = PayloadTooLarge(
            f"request body exceeds the limit of {self.max_bytes} bytes (DENSENAS_MAX_PAYLOAD_BYTES)"
        )
        await problem_response(err)(scope, receive, send)

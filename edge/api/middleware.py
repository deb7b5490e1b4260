"""Pure ASGI middleware: request body limits, security headers, an access log without secrets."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.limits import ApiLimits

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("edge.api.access")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(HTTPException):
    # An HTTPException (not ApiError) because FastAPI re-raises those from body parsing and
    # turns anything else into a vague 400.
    def __init__(self, limit: int) -> None:
        self.code = "too_large"
        self.message = f"The request is larger than the {limit // 1024} KiB allowed here."
        super().__init__(413, self.message)


class BodyLimitMiddleware:
    """Refuses bodies over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limits: ApiLimits) -> None:
        self.app = app
        self.limits = limits

    def _limit_for(self, scope: Scope) -> int:
        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/api/runs":
            return self.limits.max_upload_bytes + MULTIPART_OVERHEAD
        return self.limits.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            error = BodyTooLarge(limit)
            body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class HeadersAndAccessLogMiddleware:
    """Adds security headers and logs method, path and status — never the query string,
    which can carry the event socket's token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": None}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            access_logger.info(
                "%s %s %s %.1f ms",
                scope.get("method", "WS"),
                scope["path"],
                status["code"] if status["code"] is not None else "-",
                (time.perf_counter() - started) * 1000,
            )

"""Refuse control characters (and numbers that are not finite) at the edge of the HTTP API
with a 422 (issue 17, point 4).

A NUL in a string reached Postgres (which cannot store it) from the login, the password
reset, search and filter parameters, user and site names, and came back as a 500. This plain
ASGI middleware looks at every request before any route does: the path, the query string and,
for JSON and form bodies, every string (keys included) after decoding (JSON's ``\\u0000``
escape is a NUL too). Tab, newline and carriage return are allowed in bodies (multi-line
descriptions); nothing in the Unicode category Cc is allowed in paths and query strings.

JSON bodies with a number that is not finite (``NaN``, ``Infinity``, or one too large for a
float such as ``1e999``) are refused with a 422 too: they are not JSON, Python's parser takes
them anyway, and FastAPI's own 422 quotes the bad input back, which cannot be encoded (the
answer was a 500).

Bodies are read here (at most ``MAX_CHECKED_BODY`` bytes; a larger JSON or form body is
refused with 413, the API takes none that large) and handed on unchanged.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

MAX_CHECKED_BODY = 1024 * 1024
_BODY_ALLOWED = frozenset("\t\n\r")


def bad_character(text: str, *, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first control character of `text` (as ``U+XXXX``) that is not in `allowed`."""
    if text.isprintable():  # the usual case, decided in C (no Cc character is printable)
        return None
    for ch in text:
        if ch not in allowed and unicodedata.category(ch) == "Cc":
            return f"U+{ord(ch):04X}"
    return None


def _walk(value: Any) -> str | None:
    if isinstance(value, str):
        return bad_character(value, allowed=_BODY_ALLOWED)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _walk(key) or _walk(item)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _walk(item)
            if found:
                return found
    return None


def _decoded(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def check_url(path: str, query: bytes) -> str | None:
    """A reason to refuse the request line, or None."""
    found = bad_character(path)
    if found:
        return f"the path contains the control character {found}"
    if query:
        for key, value in parse_qsl(_decoded(query.replace(b"+", b" ")), keep_blank_values=True):
            found = bad_character(key) or bad_character(value)
            if found:
                return f"the query parameter {key[:40]!r} contains the control character {found}"
    return None


class _NotFinite(ValueError):
    pass


def _constant(name: str) -> float:
    raise _NotFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotFinite(text[:24])
    return value


def check_body(content_type: str, body: bytes) -> str | None:
    """A reason to refuse a JSON or form body, or None (other bodies are not looked at)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            found = _walk(json.loads(body, parse_constant=_constant, parse_float=_finite))
        except _NotFinite as exc:
            return f"a field holds {exc}, which is not a finite number"
        except (ValueError, RecursionError):
            return None  # not JSON: the route's own validation answers 422
    elif kind == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", "replace")
        pairs = parse_qsl(text, keep_blank_values=True)
        found = next((f for k, v in pairs for f in (_walk(k), _walk(v)) if f), None)
    else:
        return None
    return f"a field contains the control character {found}" if found else None


class ControlCharGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = check_url(scope.get("path", ""), scope.get("query_string", b""))
        if reason is None and scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if _looked_at(content_type):
                body, more = await _read_body(receive)
                if more:
                    await _refuse(send, 413, "The request body is too large.")
                    return
                reason = check_body(content_type, body)
                receive = _replay(body, receive)
        if reason is None:
            await self.app(scope, receive, send)
            return
        logger.info("refused a request: %s", reason)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refuse(send, 422, f"{reason}; remove it and try again.")


def _looked_at(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind in ("application/json", "application/x-www-form-urlencoded") or kind.endswith(
        "+json"
    )


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CHECKED_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, original: Receive) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()  # later: the real disconnect, when it comes

    return receive


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

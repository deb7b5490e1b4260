"""The browser session: JWTs in HttpOnly cookies, the in-process API client, CSRF checks.

The pages are a client of the JSON API, called in-process through an ASGI transport with
the signed-in user's access token. Every page action therefore goes through exactly the
same dependencies (role checks, site scope, audit) as an API call; nothing is only hidden
in a template.

Cookies: `mp_access` (the access JWT) and `mp_refresh` (the refresh JWT), both HttpOnly,
SameSite=Strict, Path=/, Secure when the request came over https. A 401 from the API with
a refresh cookie present rotates the pair once and retries. Rotation is single use on the
server (reuse revokes the whole family), so parallel requests of one browser (a page and
its image) must not rotate the same token twice: rotations are shared per refresh token
for a short while in this process.

CSRF: SameSite=Strict cookies are never sent on cross-site requests, and every unsafe
request to the dashboard must also carry an Origin (or, failing that, Referer) header equal
to the dashboard's own origin (OWASP "verifying origin with standard headers"). No
double-submit token is needed on top of both; the choice is documented in docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import Request
from starlette.responses import Response

from cloud.api.deps import client_ip

logger = logging.getLogger(__name__)

ACCESS_COOKIE = "mp_access"
REFRESH_COOKIE = "mp_refresh"
_API_BASE = "http://cloud.internal"
_SHARED_ROTATION_SECONDS = 30.0


class ApiProblem(Exception):
    """The API refused or failed a call; `status` and `detail` come from its answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class SignInRequired(Exception):
    """No usable session: the page sends the browser to the sign-in form."""


class CsrfRefused(Exception):
    """An unsafe request whose Origin/Referer is not the dashboard's own origin."""


@dataclass
class _Rotation:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pair: dict[str, Any] | None = None
    at: float = 0.0


_rotations: dict[str, _Rotation] = {}


def api_detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase or "request failed"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        # FastAPI validation errors: say which field and what, never the value sent.
        parts = []
        for item in detail:
            loc = ".".join(str(p) for p in item.get("loc", ())[1:]) or "input"
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
        return "; ".join(parts)
    return str(detail or resp.reason_phrase or "request failed")


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_origin(request: Request) -> None:
    """Refuse an unsafe request that does not come from a page of this dashboard."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            raise CsrfRefused("no Origin or Referer header")
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin != own_origin(request):
        raise CsrfRefused(f"origin {origin!r} is not this dashboard")


class Api:
    """One request's view of the JSON API, as the signed-in user (or anonymously)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.access = request.cookies.get(ACCESS_COOKIE)
        self.refresh = request.cookies.get(REFRESH_COOKIE)
        self.new_pair: dict[str, Any] | None = None
        self.signed_out = False
        client = request.client
        # The API's own view of the caller (a trusted proxy's X-Forwarded-For applied), so its
        # sign-in limits count the person, not the proxy in front of the dashboard.
        self._client_addr = (client_ip(request) or "127.0.0.1", client.port if client else 0)
        # Error handlers find the request's Api here, so a rotated pair still reaches the
        # browser when the page itself fails (a spent refresh token would sign it out).
        request.state.dash_api = self

    def _client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.request.app, client=self._client_addr)
        return httpx.AsyncClient(transport=transport, base_url=_API_BASE, timeout=30.0)

    async def _send(self, method: str, path: str, *, auth: bool, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if auth and self.access:
            headers["Authorization"] = f"Bearer {self.access}"
        async with self._client() as client:
            return await client.request(method, path, headers=headers, **kwargs)

    async def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call as the user; rotate the tokens once on a 401. Raises SignInRequired."""
        if not self.access and not self.refresh:
            raise SignInRequired
        resp = await self._send(method, path, auth=True, **kwargs)
        if resp.status_code == 401 and self.refresh:
            await self._rotate()
            resp = await self._send(method, path, auth=True, **kwargs)
        if resp.status_code == 401:
            self.signed_out = True
            raise SignInRequired
        return resp

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call as the user and return the JSON body; a refusal raises ApiProblem."""
        resp = await self.raw(method, path, **kwargs)
        if resp.status_code >= 400:
            raise ApiProblem(resp.status_code, api_detail(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def anonymous(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._send(method, path, auth=False, **kwargs)

    async def _rotate(self) -> None:
        assert self.refresh is not None
        key = hashlib.sha256(self.refresh.encode()).hexdigest()
        rotation = _rotations.setdefault(key, _Rotation())
        async with rotation.lock:
            fresh = time.monotonic() - rotation.at < _SHARED_ROTATION_SECONDS
            if rotation.pair is None or not fresh:
                resp = await self._send(
                    "POST",
                    "/api/v1/auth/refresh",
                    auth=False,
                    json={"refresh_token": self.refresh},
                )
                if resp.status_code != 200:
                    self.signed_out = True
                    raise SignInRequired
                rotation.pair = resp.json()
                rotation.at = time.monotonic()
        _forget_old_rotations()
        assert rotation.pair is not None
        self.adopt(rotation.pair)

    def adopt(self, pair: dict[str, Any]) -> None:
        """Use a new token pair from now on and send it to the browser with the response."""
        self.new_pair = pair
        self.access = str(pair["access_token"])
        self.refresh = str(pair["refresh_token"])
        self.signed_out = False

    def finish(self, response: Response) -> Response:
        """Set or clear the session cookies on the response as this request left them."""
        secure = self.request.url.scheme == "https"
        if self.signed_out:
            clear_session(response, secure=secure)
        elif self.new_pair is not None:
            common: dict[str, Any] = {
                "httponly": True,
                "samesite": "strict",
                "secure": secure,
                "path": "/",
            }
            response.set_cookie(ACCESS_COOKIE, self.new_pair["access_token"], **common)
            response.set_cookie(REFRESH_COOKIE, self.new_pair["refresh_token"], **common)
        return response


def clear_session(response: Response, *, secure: bool) -> None:
    for name in (ACCESS_COOKIE, REFRESH_COOKIE):
        response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")


def _forget_old_rotations() -> None:
    cutoff = time.monotonic() - _SHARED_ROTATION_SECONDS * 2
    for key in [k for k, r in _rotations.items() if r.at and r.at < cutoff]:
        rot = _rotations.get(key)
        if rot is not None and not rot.lock.locked():
            del _rotations[key]

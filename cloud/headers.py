"""Response headers every answer of the cloud carries (issue 17, point 7).

- ``X-Content-Type-Options: nosniff`` on everything (a browser must not guess that an "image"
  is HTML);
- ``Strict-Transport-Security`` when the request came over TLS, directly or through a trusted
  proxy (``trusted_proxies``) that says so with ``X-Forwarded-Proto: https``.

The dashboard's pages add their own CSP and framing rules (``cloud.web.render``); images get a
CSP of their own (``cloud.web.pages.run_image``).
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HSTS = b"max-age=31536000; includeSubDomains"


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, trusted_proxies: list[str] | None = None) -> None:
        self.app = app
        self.proxies = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies or []]

    def _over_tls(self, scope: Scope) -> bool:
        if scope.get("scheme") == "https":
            return True
        client = scope.get("client")
        if not client or not self.proxies:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        if not any(peer in net for net in self.proxies):
            return False
        headers = dict(scope.get("headers") or [])
        proto = headers.get(b"x-forwarded-proto", b"").split(b",")[-1].strip().lower()
        return bool(proto == b"https")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = self._over_tls(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if tls and b"strict-transport-security" not in names:
                    headers.append((b"strict-transport-security", HSTS))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

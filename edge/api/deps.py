"""Dependency aliases for the routes: the appliance and who is calling.

Tokens are accepted as ``Authorization: Bearer <token>`` or the HttpOnly session cookie
(kiosk pages). Routers attach ``require_operator`` at router level so a route added to them
is never open by accident; the route-table test checks that for the whole app.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from edge.api.errors import ApiError
from edge.api.limits import ApiLimits
from edge.app import Appliance
from edge.auth import Authenticator, Principal

SESSION_COOKIE = "mp_session"


def get_appliance(request: Request) -> Appliance:
    appliance: Appliance = request.app.state.appliance
    return appliance


def get_authenticator(conn: HTTPConnection) -> Authenticator:
    auth: Authenticator = conn.app.state.authenticator
    return auth


def get_limits(request: Request) -> ApiLimits:
    settings: ApiLimits = request.app.state.limits
    return settings


def client_address(conn: HTTPConnection) -> str:
    # The appliance listens on loopback or its own LAN address; no proxy sits in front, so
    # forwarded-for headers are not trusted (they would let a caller dodge the lockout).
    return conn.client.host if conn.client else "unknown"


def bearer_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = conn.cookies.get(SESSION_COOKIE)
    return cookie or None


def same_origin(conn: HTTPConnection) -> bool:
    """False when a browser says the request comes from another site.

    The session cookie is SameSite=Strict already; this is the second lock for cookie-borne
    credentials (old browsers, WebSocket hijacking). Requests without an Origin header (curl,
    Prometheus, same-origin GETs) pass.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()


def unauthenticated() -> ApiError:
    return ApiError(
        401,
        "unauthenticated",
        "Sign in first: this needs an operator session.",
        {"WWW-Authenticate": "Bearer"},
    )


def principal_for(conn: HTTPConnection, token: str | None) -> Principal | None:
    if not token:
        return None
    auth = get_authenticator(conn)
    session = auth.session_for(token)
    if session is None:
        return None
    return Principal(session.role, session.id, client_address(conn), session)


def require_operator(request: Request) -> Principal:
    """Any signed-in session (operator, or supervisor while elevated)."""
    principal = principal_for(request, bearer_token(request))
    if principal is None:
        raise unauthenticated()
    if not same_origin(request) and "authorization" not in request.headers:
        raise ApiError(
            403, "cross_origin", "Requests from another site may not use the kiosk's session."
        )
    return principal


def require_supervisor(principal: Annotated[Principal, Depends(require_operator)]) -> Principal:
    if principal.role != "supervisor":
        raise ApiError(
            403,
            "supervisor_required",
            "Only a supervisor may do this: enter the supervisor PIN first.",
        )
    return principal


def require_scraper(request: Request) -> Principal:
    """A session, or the metrics token (Prometheus) for /metrics and /ready."""
    token = bearer_token(request)
    principal = principal_for(request, token)
    if principal is not None:
        return principal
    if token and get_authenticator(request).is_metrics_token(token):
        return Principal("metrics", "metrics", client_address(request))
    raise unauthenticated()


ApplianceDep = Annotated[Appliance, Depends(get_appliance)]
AuthDep = Annotated[Authenticator, Depends(get_authenticator)]
LimitsDep = Annotated[ApiLimits, Depends(get_limits)]
OperatorUser = Annotated[Principal, Depends(require_operator)]
SupervisorUser = Annotated[Principal, Depends(require_supervisor)]
ScraperUser = Annotated[Principal, Depends(require_scraper)]

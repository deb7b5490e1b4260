"""Request dependencies: database session, the caller (user or device) and its scope."""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from cloud.crud.devices import authenticate_device
from cloud.crud.scope import Scope, scope_for_token
from cloud.models import Device, Role, User
from cloud.security import TokenClaims, TokenError, decode_token
from cloud.settings import CloudSettings
from cloud.state import AppState

logger = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="Access token (JWT) from /api/v1/auth/login")
_device_bearer = HTTPBearer(
    auto_error=False, scheme_name="DeviceToken", description="Device API token (mpd_...)"
)


# Dependencies without I/O are `async def`: a plain `def` would cost a threadpool hop each.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.microplate
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> CloudSettings:
    return state.settings


SettingsDep = Annotated[CloudSettings, Depends(get_settings)]


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """A session per request; routes commit explicitly, anything uncommitted rolls back.

    Async on purpose: a sync generator would need a threadpool slot to close the session,
    and under load every slot can be taken by requests waiting for a pooled connection that
    only such a close would give back (a deadlock). Closing here never waits for a thread.
    """
    session = state.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def _releasing(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return endpoint(*args, **kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Session):
                    value.close()

    return wrapper


class ReleasingRoute(APIRoute):
    """Closes a sync route's session in the route's own thread, as it returns.

    FastAPI validates a sync route's response in a second threadpool call and only then
    tears dependencies down. A session still holding its connection across that hop lets a
    burst take every connection while the requests holding them wait for threads that are
    busy waiting for connections. Routes return API models, never ORM objects, so nothing
    needs the session after the body.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = _releasing(endpoint)
        super().__init__(path, endpoint, **kwargs)


def client_ip(request: Request) -> str | None:
    """The client's address: the peer, or, when the peer is a configured trusted proxy, the
    nearest address in X-Forwarded-For that is not itself a trusted proxy (the ones further
    left were written by the client and prove nothing)."""
    peer = request.client.host if request.client else None
    state = getattr(request.app.state, "microplate", None)
    proxies = state.settings.trusted_proxies if state is not None else []
    if peer is None or not proxies or not _trusted(peer, proxies):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(address: str, proxies: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in proxies)


def _unauthorized(detail: str = "Not authenticated") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _release(session: Session) -> None:
    """End the read transaction so its connection goes back to the pool now.

    Authentication and the route body run in two different threadpool calls. Holding a
    pooled connection between them lets a burst of requests take every connection while
    their route bodies wait for threads that are themselves waiting for connections.
    """
    session.commit()


def user_from_token(session: Session, settings: CloudSettings, token: str) -> User | None:
    try:
        claims = decode_token(settings, token, kind="access")
        user_id = uuid.UUID(claims.subject)
    except (TokenError, ValueError) as exc:
        logger.info("rejected access token: %s", exc)
        return None
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    # Tokens minted before a password change stop working at once.
    if claims.issued_at < int(user.password_changed_at.timestamp()):
        return None
    return user


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    user = user_from_token(session, settings, credentials.credentials)
    _release(session)
    if user is None:
        raise _unauthorized("Invalid or expired token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_manager(user: CurrentUser) -> User:
    if user.role not in (Role.admin, Role.manager):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This needs the manager or admin role")
    return user


async def get_admin(user: CurrentUser) -> User:
    if user.role != Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This needs the admin role")
    return user


ManagerUser = Annotated[User, Depends(get_manager)]
AdminUser = Annotated[User, Depends(get_admin)]


async def get_scope(user: CurrentUser) -> Scope:
    return Scope.for_user(user)


ScopeDep = Annotated[Scope, Depends(get_scope)]


async def get_access_claims(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    """A verified access token, checked in the event loop (no I/O: microseconds).

    For the hot read routes, which then resolve the user with `reader_scope` on the same
    connection and in the same worker thread as their own query.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    try:
        claims = decode_token(settings, credentials.credentials, kind="access")
        uuid.UUID(claims.subject)
    except (TokenError, ValueError) as exc:
        logger.info("rejected access token: %s", exc)
        raise _unauthorized("Invalid or expired token") from None
    return claims


AccessClaims = Annotated[TokenClaims, Depends(get_access_claims)]


def reader_scope(conn: Connection, claims: TokenClaims) -> Scope:
    """The scope of the token's user, or 401 when the user is gone, inactive or the token
    predates a password change: the same rules as `CurrentUser`, checked on every request."""
    scope = scope_for_token(conn, user_id=uuid.UUID(claims.subject), issued_at=claims.issued_at)
    if scope is None:
        raise _unauthorized("Invalid or expired token")
    return scope


def get_device(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> Device:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized()
    device = authenticate_device(session, token=credentials.credentials)
    _release(session)
    if device is None:
        raise _unauthorized("Invalid or revoked device token")
    return device


DeviceDep = Annotated[Device, Depends(get_device)]


def not_found(what: str) -> HTTPException:
    # Out-of-scope and missing look the same, so ids of other sites' data leak nothing.
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")

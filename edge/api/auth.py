"""Sign-in, supervisor elevation and sign-out.

Sign-in returns the session token in the body (for scripts: ``Authorization: Bearer``) and
sets it as an HttpOnly, SameSite=Strict cookie (for the kiosk pages and the event socket).
Failures count towards a per-address lockout (``edge.auth.FailureLimiter``).
"""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from edge.api.deps import (
    SESSION_COOKIE,
    AuthDep,
    OperatorUser,
    bearer_token,
    client_address,
)
from edge.auth import Session

router = APIRouter(prefix="/api/auth", tags=["auth"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: str = Field(min_length=1, max_length=512, description="the device-local secret")


class Elevate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pin: str = Field(min_length=1, max_length=256, description="supervisor PIN or password")


class SessionOut(BaseModel):
    session_id: str
    role: str
    expires_at: datetime
    elevated_until: datetime | None = None


class SignedIn(SessionOut):
    token: str


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _session_out(session: Session) -> SessionOut:
    elevated = session.role == "supervisor"
    return SessionOut(
        session_id=session.id,
        role=session.role,
        expires_at=_when(session.expires_at),
        elevated_until=_when(session.elevated_until) if elevated else None,
    )


@router.post("/sign-in", summary="Sign in with the device-local operator secret (open)")
def sign_in(body: SignIn, request: Request, response: Response, auth: AuthDep) -> SignedIn:
    token, session = auth.sign_in(body.secret, client_address(request))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(auth.settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=auth.settings.cookie_secure,
        path="/",
    )
    response.headers["Cache-Control"] = "no-store"
    return SignedIn(token=token, **_session_out(session).model_dump())


@router.post("/elevate", summary="Become supervisor for a short window with the PIN")
def elevate(body: Elevate, request: Request, user: OperatorUser, auth: AuthDep) -> SessionOut:
    assert user.session is not None  # require_operator only yields session principals
    session = auth.elevate(user.session, body.pin, client_address(request))
    return _session_out(session)


@router.post("/drop-elevation", summary="End the supervisor window early")
def drop_elevation(user: OperatorUser, auth: AuthDep) -> SessionOut:
    assert user.session is not None
    auth.drop_elevation(user.session)
    return _session_out(user.session)


@router.get("/session", summary="The caller's session and role")
def current_session(user: OperatorUser) -> SessionOut:
    assert user.session is not None
    return _session_out(user.session)


@router.post("/sign-out", status_code=status.HTTP_204_NO_CONTENT, summary="End the session")
def sign_out(request: Request, response: Response, _: OperatorUser, auth: AuthDep) -> None:
    token = bearer_token(request)
    if token:
        auth.sign_out(token)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")

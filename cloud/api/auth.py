"""Sign-in, token refresh, logout, password change and reset."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, status

from cloud.api.deps import CurrentUser, ReleasingRoute, SessionDep, SettingsDep, StateDep, client_ip
from cloud.crud import audit, tokens, users
from cloud.mail import send_mail
from cloud.models import User
from cloud.schemas import (
    LoginRequest,
    PasswordChange,
    RefreshRequest,
    ResetConfirm,
    ResetRequest,
    TokenPairPublic,
    UserPublic,
)
from cloud.security import TokenError, verify_password

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/auth", tags=["auth"], route_class=ReleasingRoute)
_BAD_LOGIN = "Incorrect e-mail or password"


def user_public(user: User) -> UserPublic:
    return UserPublic(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        role=user.role,
        is_active=user.is_active,
        site_ids=[site.id for site in user.sites],
    )


def _pair(pair: tokens.TokenPair) -> TokenPairPublic:
    return TokenPairPublic(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/login", responses={401: {}, 429: {}})
def login(
    body: LoginRequest, request: Request, session: SessionDep, state: StateDep
) -> TokenPairPublic:
    ip = client_ip(request)
    if not state.login_limiter.allow(ip or "unknown"):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "Too many sign-in attempts")
    settings = state.settings
    result = users.authenticate(
        session,
        email=body.email,
        password=body.password,
        max_failures=settings.login_max_failures,
        lockout=timedelta(minutes=settings.lockout_minutes),
        ip=ip or "unknown",
    )
    if result.user is None:
        audit.record(
            session,
            action="auth.login_locked" if result.locked else "auth.login_failed",
            ip=ip,
            detail={"email_hint": body.email[:3] + "…"},
        )
        session.commit()
        if result.locked:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this account from this address; try again later",
            )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _BAD_LOGIN)
    pair = tokens.start_session(session, settings, user=result.user)
    audit.record(session, action="auth.login", actor_user_id=result.user.id, ip=ip)
    session.commit()
    return _pair(pair)


@router.post("/refresh", responses={401: {}})
def refresh(
    body: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenPairPublic:
    try:
        pair = tokens.rotate(session, settings, token=body.refresh_token)
    except tokens.RefreshReuse as reuse:
        audit.record(
            session,
            action="auth.refresh_reuse",
            actor_user_id=reuse.user_id,
            target_type="token_family",
            target_id=reuse.family_id,
            ip=client_ip(request),
        )
        session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Refresh token already used") from None
    except TokenError as exc:
        logger.info("refresh refused: %s", exc)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid refresh token") from None
    session.commit()
    return _pair(pair)


@router.post("/logout", status_code=204, responses={401: {}})
def logout(
    body: RefreshRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> None:
    try:
        user_id = tokens.logout(session, settings, token=body.refresh_token)
    except TokenError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid refresh token") from None
    audit.record(session, action="auth.logout", actor_user_id=user_id, ip=client_ip(request))
    session.commit()


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return user_public(user)


@router.post("/password", status_code=204, responses={400: {}})
def change_password(
    body: PasswordChange, request: Request, user: CurrentUser, session: SessionDep
) -> None:
    if not verify_password(body.current_password, user.password_hash):
        audit.record(
            session,
            action="auth.password_change_failed",
            actor_user_id=user.id,
            ip=client_ip(request),
        )
        session.commit()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Current password is wrong")
    users.set_password(session, user=user, password=body.new_password)
    tokens.revoke_all_for_user(session, user_id=user.id)
    audit.record(
        session, action="auth.password_changed", actor_user_id=user.id, ip=client_ip(request)
    )
    session.commit()


@router.post("/password-reset/request", status_code=202, responses={429: {}})
def request_reset(
    body: ResetRequest,
    request: Request,
    session: SessionDep,
    state: StateDep,
    background: BackgroundTasks,
) -> dict[str, str]:
    """Always 202 (or 429 for an address asking too often): the answer never says whether the
    address has an account, and takes the same time either way (the same database work; the
    mail leaves after the answer)."""
    ip = client_ip(request)
    limiter = state.reset_limiter
    if limiter is not None and not limiter.allow(ip or "unknown"):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "Too many reset requests")
    settings = state.settings
    user = users.get_user_by_email(session, email=body.email)
    known = user is not None and user.is_active and tokens.open_reset_tokens(session, user=user) < 3
    token = tokens.create_reset_token(session, settings, user=user if known else None)
    audit.record(
        session,
        action="auth.reset_requested" if known else "auth.reset_refused",
        actor_user_id=user.id if known and user is not None else None,
        ip=ip,
    )
    session.commit()
    if known and user is not None:
        background.add_task(
            send_mail,
            settings,
            to=user.email,
            subject="Microplate password reset",
            body=(
                "Use this single-use token within "
                f"{settings.reset_token_minutes} minutes to set a new password:\n{token}\n"
            ),
        )
    return {"detail": "If the address has an account, a reset message is on its way"}


@router.post("/password-reset/confirm", status_code=204, responses={400: {}})
def confirm_reset(body: ResetConfirm, request: Request, session: SessionDep) -> None:
    user = tokens.consume_reset_token(session, token=body.token)
    if user is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Reset token is invalid or expired")
    users.set_password(session, user=user, password=body.new_password)
    tokens.revoke_all_for_user(session, user_id=user.id)
    audit.record(
        session, action="auth.password_reset", actor_user_id=user.id, ip=client_ip(request)
    )
    session.commit()

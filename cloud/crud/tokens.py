"""Rotating refresh tokens (with family revocation on reuse) and password reset tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cloud.models import PasswordResetToken, RefreshToken, User
from cloud.security import (
    TokenError,
    create_access_token,
    create_token,
    decode_token,
    digest_token,
    new_opaque_token,
    utcnow,
)
from cloud.settings import CloudSettings


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class RefreshReuse(Exception):
    """A spent refresh token came back: its family is now revoked."""

    def __init__(self, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        super().__init__("refresh token reuse")
        self.user_id = user_id
        self.family_id = family_id


def _issue(
    session: Session,
    settings: CloudSettings,
    *,
    user: User,
    family_id: uuid.UUID,
    family_expires_at: datetime,
) -> TokenPair:
    now = utcnow()
    expires = min(now + timedelta(hours=settings.refresh_token_hours), family_expires_at)
    row = RefreshToken(
        id=uuid.uuid4(),
        family_id=family_id,
        user_id=user.id,
        expires_at=expires,
        family_expires_at=family_expires_at,
    )
    session.add(row)
    session.flush()
    refresh = create_token(
        settings,
        subject=str(user.id),
        kind="refresh",
        expires_at=expires,
        jti=str(row.id),
        family=str(family_id),
    )
    return TokenPair(
        access_token=create_access_token(settings, subject=str(user.id)),
        refresh_token=refresh,
        expires_in=settings.access_token_minutes * 60,
    )


def start_session(session: Session, settings: CloudSettings, *, user: User) -> TokenPair:
    absolute = utcnow() + timedelta(days=settings.refresh_absolute_days)
    return _issue(session, settings, user=user, family_id=uuid.uuid4(), family_expires_at=absolute)


def _load(session: Session, settings: CloudSettings, token: str) -> RefreshToken:
    claims = decode_token(settings, token, kind="refresh")
    try:
        token_id = uuid.UUID(claims.jti)
    except ValueError as exc:
        raise TokenError("malformed jti") from exc
    row = session.get(RefreshToken, token_id, with_for_update=True)
    if row is None or str(row.family_id) != claims.family or str(row.user_id) != claims.subject:
        raise TokenError("unknown refresh token")
    return row


def rotate(session: Session, settings: CloudSettings, *, token: str) -> TokenPair:
    """Spend a refresh token and issue the next one of its family.

    Raises TokenError for anything invalid and RefreshReuse (after revoking the family, which
    the caller must commit) when the token was already spent.
    """
    row = _load(session, settings, token)
    now = utcnow()
    if row.revoked_at is not None:
        raise TokenError("refresh token revoked")
    if row.used_at is not None:
        revoke_family(session, family_id=row.family_id)
        raise RefreshReuse(row.user_id, row.family_id)
    if row.expires_at <= now or row.family_expires_at <= now:
        raise TokenError("refresh token expired")
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise TokenError("user inactive")
    row.used_at = now
    return _issue(
        session,
        settings,
        user=user,
        family_id=row.family_id,
        family_expires_at=row.family_expires_at,
    )


def revoke_family(session: Session, *, family_id: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_all_for_user(session: Session, *, user_id: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def logout(session: Session, settings: CloudSettings, *, token: str) -> uuid.UUID:
    """Revoke the family of a refresh token; return the user id it belonged to."""
    row = _load(session, settings, token)
    revoke_family(session, family_id=row.family_id)
    return row.user_id


def create_reset_token(session: Session, settings: CloudSettings, *, user: User | None) -> str:
    """A new single-use reset token for `user`. With None, the same work without storing
    anything (the answer to an unknown address must take as long as to a known one)."""
    token = new_opaque_token()
    row = PasswordResetToken(
        user_id=user.id if user is not None else None,
        token_digest=digest_token(token),
        expires_at=utcnow() + timedelta(minutes=settings.reset_token_minutes),
    )
    if user is not None:
        session.add(row)
        session.flush()
    return token


def open_reset_tokens(session: Session, *, user: User) -> int:
    """Reset tokens of `user` that could still be spent (the request limit per account)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(PasswordResetToken)
            .where(
                PasswordResetToken.user_id == user.id,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.expires_at > utcnow(),
            )
        )
        or 0
    )


def consume_reset_token(session: Session, *, token: str) -> User | None:
    """Spend a reset token once; None when it is unknown, used or expired."""
    row = session.scalar(
        select(PasswordResetToken)
        .where(PasswordResetToken.token_digest == digest_token(token))
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    row.used_at = utcnow()
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return user

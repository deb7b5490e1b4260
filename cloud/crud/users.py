"""Users, sign-in with lockout, password changes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from cloud.models import LoginThrottle, PasswordResetToken, Role, Site, User
from cloud.security import hash_password, utcnow, verify_password


class UserError(ValueError):
    """A request about users that cannot be honoured (message is safe to show)."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_user(session: Session, *, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def get_user_by_email(session: Session, *, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def list_users(session: Session, *, offset: int = 0, limit: int = 100) -> list[User]:
    query = select(User).order_by(User.email).offset(offset).limit(limit)
    return list(session.scalars(query))


def count_admins(session: Session) -> int:
    query = select(func.count()).where(User.role == Role.admin, User.is_active.is_(True))
    return int(session.scalar(query) or 0)


def _sites(session: Session, site_ids: list[uuid.UUID]) -> list[Site]:
    if not site_ids:
        return []
    sites = list(session.scalars(select(Site).where(Site.id.in_(site_ids))))
    if len(sites) != len(set(site_ids)):
        raise UserError("one or more site ids do not exist")
    return sites


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    role: Role,
    full_name: str = "",
    site_ids: list[uuid.UUID] | None = None,
) -> User:
    if get_user_by_email(session, email=email) is not None:
        raise UserError("a user with this e-mail already exists")
    user = User(
        email=normalise_email(email),
        full_name=full_name,
        password_hash=hash_password(password),
        role=role,
        is_active=True,
        sites=_sites(session, site_ids or []),
    )
    session.add(user)
    session.flush()
    return user


def update_user(
    session: Session,
    *,
    user: User,
    role: Role | None = None,
    is_active: bool | None = None,
    full_name: str | None = None,
    site_ids: list[uuid.UUID] | None = None,
) -> dict[str, object]:
    """Apply the given changes; return what changed (for the audit log)."""
    changes: dict[str, object] = {}
    demoting = (role is not None and role != Role.admin) or is_active is False
    if user.role == Role.admin and demoting and count_admins(session) <= 1:
        raise UserError("cannot demote or deactivate the last active admin")
    if role is not None and role != user.role:
        changes["role"] = [user.role.value, role.value]
        user.role = role
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = [user.is_active, is_active]
        user.is_active = is_active
    if full_name is not None and full_name != user.full_name:
        changes["full_name"] = True
        user.full_name = full_name
    if site_ids is not None:
        before = sorted(str(s.id) for s in user.sites)
        user.sites = _sites(session, site_ids)
        after = sorted(str(s.id) for s in user.sites)
        if before != after:
            changes["sites"] = [before, after]
    session.flush()
    return changes


def set_password(session: Session, *, user: User, password: str) -> None:
    """Set a new password; every reset token still open for the account stops working."""
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    session.flush()


@dataclass(frozen=True)
class SignIn:
    user: User | None
    locked: bool


# Consecutive failures are forgotten after a quiet day; each lock after the first is twice as
# long as the one before, up to 64 times the base lockout.
_FAILURES_FORGOTTEN = timedelta(hours=24)
_MAX_DOUBLINGS = 6


def _throttle_key(email: str, ip: str | None = None) -> str:
    # Per account *and* client address: failures from elsewhere cannot lock the owner out.
    key = normalise_email(email) if ip is None else f"{normalise_email(email)}\n{ip}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def authenticate(
    session: Session,
    *,
    email: str,
    password: str,
    max_failures: int,
    lockout: timedelta,
    ip: str | None = None,
) -> SignIn:
    """Check credentials with the same work whether or not the account exists.

    Failures are counted per e-mail (hashed) and client address, for existing and unknown
    accounts alike, so the lockout can neither be used to discover which addresses have
    accounts nor by someone elsewhere to lock the owner out. After `max_failures` the pair is
    locked for `lockout`, and each further failure once a lock ends doubles it (back-off).
    """
    now = utcnow()
    key = _throttle_key(email, ip)
    throttle = session.get(LoginThrottle, key)
    user = get_user_by_email(session, email=email)
    ok = verify_password(password, user.password_hash if user is not None else None)
    if throttle is not None and throttle.locked_until is not None and throttle.locked_until > now:
        return SignIn(user=None, locked=True)
    if ok and user is not None and user.is_active:
        session.execute(delete(LoginThrottle).where(LoginThrottle.email_key == key))
        return SignIn(user=user, locked=False)
    # One atomic upsert: concurrent failures for the same pair all count, none collide.
    failures = session.execute(
        text(
            """
            INSERT INTO login_throttle (email_key, failures, last_failure_at, locked_until)
            VALUES (:key, 1, :now, NULL)
            ON CONFLICT (email_key) DO UPDATE SET
                failures = CASE WHEN login_throttle.last_failure_at < :forgotten THEN 1
                                ELSE login_throttle.failures + 1 END,
                last_failure_at = :now
            RETURNING failures
            """
        ),
        {"key": key, "now": now, "forgotten": now - _FAILURES_FORGOTTEN},
    ).scalar_one()
    locked = failures >= max_failures
    if locked:
        until = now + lockout * 2 ** min(failures - max_failures, _MAX_DOUBLINGS)
        session.execute(
            update(LoginThrottle).where(LoginThrottle.email_key == key).values(locked_until=until)
        )
    session.expire_all()
    return SignIn(user=None, locked=locked)

"""Users, sign-in with lockout, password changes."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from cloud.models import LoginThrottle, Role, Site, User
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
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    session.flush()


@dataclass(frozen=True)
class SignIn:
    user: User | None
    locked: bool


def _throttle_key(email: str) -> str:
    return hashlib.sha256(normalise_email(email).encode("utf-8")).hexdigest()


def authenticate(
    session: Session, *, email: str, password: str, max_failures: int, lockout: timedelta
) -> SignIn:
    """Check credentials with the same work whether or not the account exists.

    Failures are counted per e-mail (hashed) for existing and unknown accounts alike, so the
    lockout cannot be used to discover which addresses have accounts.
    """
    now = utcnow()
    key = _throttle_key(email)
    throttle = session.get(LoginThrottle, key)
    user = get_user_by_email(session, email=email)
    ok = verify_password(password, user.password_hash if user is not None else None)
    if throttle is not None and throttle.locked_until is not None and throttle.locked_until > now:
        return SignIn(user=None, locked=True)
    if ok and user is not None and user.is_active:
        session.execute(delete(LoginThrottle).where(LoginThrottle.email_key == key))
        return SignIn(user=user, locked=False)
    # One atomic upsert: concurrent failures for the same address all count, none collide.
    locked_until = session.execute(
        text(
            """
            INSERT INTO login_throttle (email_key, failures, last_failure_at, locked_until)
            VALUES (:key, 1, :now, CASE WHEN :max <= 1 THEN CAST(:until AS timestamptz) END)
            ON CONFLICT (email_key) DO UPDATE SET
                failures = CASE WHEN login_throttle.locked_until <= :now THEN 1
                                ELSE login_throttle.failures + 1 END,
                last_failure_at = :now,
                locked_until = CASE
                    WHEN (CASE WHEN login_throttle.locked_until <= :now THEN 1
                               ELSE login_throttle.failures + 1 END) >= :max
                        THEN CAST(:until AS timestamptz)
                    WHEN login_throttle.locked_until <= :now THEN NULL
                    ELSE login_throttle.locked_until END
            RETURNING locked_until
            """
        ),
        {"key": key, "now": now, "max": max_failures, "until": now + lockout},
    ).scalar_one()
    session.expire_all()
    return SignIn(user=None, locked=locked_until is not None)

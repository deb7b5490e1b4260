"""Prestart: wait for the database, migrate, create the first admin, prepare storage."""

from __future__ import annotations

import logging

from cloud.crud import audit, users
from cloud.db import make_engine, make_sessionmaker, migrate, session_scope, wait_for_database
from cloud.models import Role
from cloud.settings import CloudSettings
from cloud.storage import ObjectStore

logger = logging.getLogger(__name__)


def ensure_first_admin(settings: CloudSettings) -> bool:
    """Create the admin named in settings if no active admin exists; True if created."""
    if not settings.first_admin_email or settings.first_admin_password is None:
        return False
    engine = make_engine(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if users.count_admins(session) > 0:
                return False
            if users.get_user_by_email(session, email=settings.first_admin_email) is not None:
                logger.warning("first admin e-mail exists as a non-admin; not changing it")
                return False
            user = users.create_user(
                session,
                email=settings.first_admin_email,
                password=settings.first_admin_password.get_secret_value(),
                role=Role.admin,
                full_name="First admin",
            )
            audit.record(
                session,
                action="user.created",
                target_type="user",
                target_id=user.id,
                detail={"role": "admin", "by": "prestart"},
            )
    finally:
        engine.dispose()
    logger.info("first admin created")
    return True


def prestart(settings: CloudSettings) -> None:
    engine = make_engine(settings)
    try:
        wait_for_database(engine, timeout=settings.db_wait_seconds)
    finally:
        engine.dispose()
    migrate(settings.database_url)
    ensure_first_admin(settings)
    if settings.s3_endpoint_url or settings.s3_access_key:
        ObjectStore(settings).ensure_bucket()

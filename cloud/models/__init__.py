"""Postgres tables (SQLAlchemy 2 declarative). API schemas live in `cloud.schemas`."""

from cloud.models.accounts import (
    AuditEntry,
    Device,
    LoginThrottle,
    PasswordResetToken,
    RefreshToken,
    Role,
    Site,
    User,
    user_sites,
)
from cloud.models.base import Base
from cloud.models.ota import ModelAssignment, ModelRelease, ModelRollout
from cloud.models.results import DeviceEvent, Run, RunRow, RunWell, Sample

__all__ = [
    "AuditEntry",
    "Base",
    "Device",
    "DeviceEvent",
    "LoginThrottle",
    "ModelAssignment",
    "ModelRelease",
    "ModelRollout",
    "PasswordResetToken",
    "RefreshToken",
    "Role",
    "Run",
    "RunRow",
    "RunWell",
    "Sample",
    "Site",
    "User",
    "user_sites",
]

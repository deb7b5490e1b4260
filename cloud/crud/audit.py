"""The audit log: sign-ins, failures, permission and device changes, data deletions."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.models import AuditEntry


def record(
    session: Session,
    *,
    action: str,
    actor_user_id: uuid.UUID | None = None,
    actor_device_id: uuid.UUID | None = None,
    target_type: str | None = None,
    target_id: str | uuid.UUID | None = None,
    site_id: uuid.UUID | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        action=action,
        actor_user_id=actor_user_id,
        actor_device_id=actor_device_id,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        site_id=site_id,
        ip=ip,
        detail=detail or {},
        message="",
    )
    session.add(entry)
    return entry


def list_entries(
    session: Session, *, action: str | None = None, limit: int = 100, before_id: int | None = None
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))

"""The audit log, for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.api.deps import AdminUser, SessionDep
from cloud.crud import audit
from cloud.schemas import AuditPublic

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("")
def list_audit(
    admin: AdminUser,
    session: SessionDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditPublic]:
    entries = audit.list_entries(session, action=action, limit=limit, before_id=before_id)
    return [AuditPublic.model_validate(e) for e in entries]

"""The audit log: who did what (sign-ins, deletions, settings and calibration changes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.db import admin

if TYPE_CHECKING:
    from edge.db.store import Store


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        """One row, in its own transaction."""
        with self._store.write() as db:
            admin.audit(db, actor=actor, action=action, detail=detail)

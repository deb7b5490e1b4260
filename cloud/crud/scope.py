"""Which sites a caller may see. Every query that returns site data filters through this."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, false, text, true

from cloud.models import Role, User

# One statement for what a user's request needs to know about them: still active, when the
# password last changed (older tokens die), role and sites. No ORM objects on the hot path.
_ACCESS_SQL = text(
    """
    SELECT u.is_active, u.role::text AS role, u.password_changed_at,
           ARRAY(SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id) AS site_ids
    FROM users u WHERE u.id = :user_id
    """
)


@dataclass(frozen=True)
class Scope:
    all_sites: bool
    site_ids: frozenset[uuid.UUID]

    @classmethod
    def for_user(cls, user: User) -> Scope:
        if user.role == Role.admin:
            return cls(all_sites=True, site_ids=frozenset())
        return cls(all_sites=False, site_ids=frozenset(site.id for site in user.sites))

    @classmethod
    def everything(cls) -> Scope:
        return cls(all_sites=True, site_ids=frozenset())

    def allows(self, site_id: uuid.UUID) -> bool:
        return self.all_sites or site_id in self.site_ids

    def clause(self, column: Any) -> ColumnElement[bool]:
        """A WHERE clause restricting `column` (a site id column) to the visible sites."""
        if self.all_sites:
            return true()
        if not self.site_ids:
            return false()
        return column.in_(sorted(self.site_ids))  # type: ignore[no-any-return]


def scope_for_token(conn: Connection, *, user_id: uuid.UUID, issued_at: int) -> Scope | None:
    """The scope of a verified access token's user; None if the token must be refused.

    The same checks as `cloud.api.deps.user_from_token`, read on every request (no cache),
    so a deactivation or password change takes effect on the next request in every process.
    """
    row = conn.execute(_ACCESS_SQL, {"user_id": user_id}).first()
    if row is None or not row.is_active:
        return None
    if issued_at < int(row.password_changed_at.timestamp()):
        return None
    if row.role == Role.admin.value:
        return Scope.everything()
    return Scope(all_sites=False, site_ids=frozenset(row.site_ids))

"""Which sites a caller may see. Every query that returns site data filters through this."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, false, true

from cloud.models import Role, User


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

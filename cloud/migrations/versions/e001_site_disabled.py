"""sites can be disabled

Revision ID: e001
Revises: s002
Create Date: 2026-12-06 20:10:00

A disabled site keeps its data (visible as before) but its devices lose their broker accounts
and API tokens until it is enabled again, and no device can be provisioned for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e001"
down_revision: str | None = "s002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sites", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("sites", "disabled_at")

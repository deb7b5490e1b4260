"""desired config revisions: sites.config_revision, devices.config_sent_revision

Revision ID: c001
Revises: o001
Create Date: 2026-12-07 00:30:00

The cloud publishes a retained DesiredConfig on each device's ``config`` topic (today: whether
the device uploads raw photos, following the site's "allow corrected plates for training").
`sites.config_revision` goes up at every change of what the site's devices should use;
`devices.config_sent_revision` is the revision the broker last acknowledged for the device, so
a config not yet delivered (broker down) is sent on the next pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c001"
down_revision: str | None = "o001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sites",
        sa.Column("config_revision", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column(
        "devices",
        sa.Column("config_sent_revision", sa.Integer(), nullable=False, server_default="0"),
    )
    # Sites already opted in: their devices are told once.
    op.execute("UPDATE sites SET config_revision = 1 WHERE allow_training")


def downgrade() -> None:
    op.drop_column("devices", "config_sent_revision")
    op.drop_column("sites", "config_revision")

"""ingest dead letters

Revision ID: s001
Revises: 0001
Create Date: 2026-11-26 09:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The table's model lives with the ingest (cloud.ingest.models); importing it here puts it in
# Base.metadata wherever migrations are loaded, so autogenerate and the models-vs-migrations
# check see it. (Cleaner once cloud/models/__init__.py imports it too.)
import cloud.ingest.models  # noqa: F401

revision: str = "s001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(length=512), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("edit", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("payload_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_dead_letters")),
    )
    op.create_index(
        "ix_ingest_dead_letters_received", "ingest_dead_letters", ["received_at"], unique=False
    )
    op.create_index(
        "ix_ingest_dead_letters_device",
        "ingest_dead_letters",
        ["site", "device", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_ingest_dead_letters_device", table_name="ingest_dead_letters")
    op.drop_index("ix_ingest_dead_letters_received", table_name="ingest_dead_letters")
    op.drop_table("ingest_dead_letters")

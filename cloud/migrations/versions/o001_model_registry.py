"""model registry, rollouts, and the sites' training opt-in

Revision ID: o001
Revises: s003
Create Date: 2026-12-06 23:00:00

Operator reviews on runs (`runs.reviewed_at`, `runs.n_corrected`: wells changed from the
model's call), signed model releases (`model_releases`), their assignment to a site or
device group with a canary device (`model_assignments`), each device's progress
(`model_rollouts`), and `sites.allow_training` ("allow corrected plates for training", off
by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "o001"
down_revision: str | None = "s003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "runs", sa.Column("n_corrected", sa.SmallInteger(), nullable=False, server_default="0")
    )
    op.create_index(
        "ix_runs_reviewed",
        "runs",
        ["reviewed_at"],
        postgresql_where=sa.text("reviewed_at IS NOT NULL"),
    )
    op.add_column(
        "sites",
        sa.Column("allow_training", sa.Boolean(), nullable=False, server_default="false"),
    )
    op.create_table(
        "model_releases",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signed_manifest", postgresql.JSONB(), nullable=False),
        sa.Column("object_prefix", sa.String(length=200), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_releases"),
        sa.UniqueConstraint("manifest_sha256", name="uq_model_releases_manifest_sha256"),
        sa.UniqueConstraint("name", "version", name="uq_model_releases_name_version"),
    )
    op.create_table(
        "model_assignments",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("release_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("site_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("device_ids", postgresql.ARRAY(postgresql.UUID(as_uuid=True)), nullable=True),
        sa.Column("canary_device_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("shadow_plates", sa.Integer(), nullable=False),
        sa.Column("agreement_threshold", sa.Float(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("switch_confirmed", sa.Boolean(), nullable=False),
        sa.Column("created_by", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["model_releases.id"],
            name="fk_model_assignments_release_id_model_releases",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name="fk_model_assignments_site_id_sites",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["canary_device_id"],
            ["devices.id"],
            name="fk_model_assignments_canary_device_id_devices",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_assignments"),
    )
    op.create_index(
        "ix_model_assignments_release_id", "model_assignments", ["release_id"], unique=False
    )
    op.create_table(
        "model_rollouts",
        sa.Column("assignment_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("device_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("notified_revision", sa.Integer(), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("shadow_plates", sa.Integer(), nullable=False),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.Column("current_ms", sa.Float(), nullable=True),
        sa.Column("candidate_ms", sa.Float(), nullable=True),
        sa.Column("needs_review_rate", sa.Float(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["model_assignments.id"],
            name="fk_model_rollouts_assignment_id_model_assignments",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_model_rollouts_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("assignment_id", "device_id", name="pk_model_rollouts"),
    )
    op.create_index("ix_model_rollouts_device_id", "model_rollouts", ["device_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_model_rollouts_device_id", table_name="model_rollouts")
    op.drop_table("model_rollouts")
    op.drop_index("ix_model_assignments_release_id", table_name="model_assignments")
    op.drop_table("model_assignments")
    op.drop_table("model_releases")
    op.drop_column("sites", "allow_training")
    op.drop_index("ix_runs_reviewed", table_name="runs")
    op.drop_column("runs", "n_corrected")
    op.drop_column("runs", "reviewed_at")

"""runs held for review: status needs_review and review_reasons

Revision ID: s003
Revises: s005 (written beside e001 and s005, applied after them)
Create Date: 2026-12-06 20:00:00

The edge's plate-quality gate marks a read `needs_review` (with reasons) when the grid does not
fit, the image is not a plate, too many wells are unread or the precision variants disagree.
Such a run is stored with `status = 'needs_review'` (shown, never pooled) and its reasons in
`review_reasons`; a partial index serves the "runs to review" listing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "s003"
down_revision: str | None = "s005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column(
            "review_reasons",
            postgresql.ARRAY(sa.String(length=40)),
            nullable=False,
            server_default="{}",
        ),
    )
    op.create_index(
        "ix_runs_needs_review",
        "runs",
        ["site_id", "read_at"],
        postgresql_where=sa.text("status = 'needs_review'"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_needs_review", table_name="runs")
    # Runs held for review become deleted ones: an older cloud would pool them as current.
    op.execute("UPDATE runs SET status = 'deleted' WHERE status = 'needs_review'")
    op.drop_column("runs", "review_reasons")

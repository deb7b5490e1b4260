"""search: prefix indexes, any letter case, on sample number, submission and run description

Revision ID: s005
Revises: e001
Create Date: 2026-12-06 20:30:00

Sample search becomes "starts with, any case" (cloud.crud.search). Each lookup is a btree on
`lower(column) text_pattern_ops`: it serves `lower(column) LIKE 'prefix%'` as a range scan
under any database collation, and costs far less to keep up than a trigram index (which would
also need the pg_trgm extension). The description is read from the run's wire document.
The exact-match indexes on sample_number and submission_number stay: ingest and the
per-site uniqueness use them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "s005"
down_revision: str | None = "e001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_samples_sample_number_prefix": "samples (lower(sample_number) text_pattern_ops)",
    "ix_samples_submission_prefix": "samples (lower(submission_number) text_pattern_ops)",
    # Current runs only, with sample_id in the index: an index-only scan for broad prefixes.
    "ix_runs_description_prefix": "runs (lower(extra ->> 'description') text_pattern_ops) "
    "INCLUDE (sample_id) WHERE status = 'current'",
}


def upgrade() -> None:
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")

"""run wells as one JSON document per run

Revision ID: s002
Revises: s001
Create Date: 2026-11-26 12:20:00

A run's 96 (or 384) wells were 96 rows, each with its own index entry and foreign-key check:
two thirds of the database's work per ingested run. They are only ever read whole (the run
detail), never queried well by well, so they become one `json` document per run, in plate
order, exactly as the API serves it. Existing rows are converted in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "s002"
down_revision: str | None = "s001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.rename_table("run_wells", "run_wells_rows")
    op.execute("ALTER TABLE run_wells_rows RENAME CONSTRAINT pk_run_wells TO pk_run_wells_rows")
    op.execute(
        "ALTER TABLE run_wells_rows RENAME CONSTRAINT fk_run_wells_run_id_runs "
        "TO fk_run_wells_rows_run_id_runs"
    )
    op.create_table(
        "run_wells",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("wells", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name=op.f("fk_run_wells_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_wells")),
    )
    op.execute(
        """
        INSERT INTO run_wells (run_id, wells)
        SELECT run_id, json_agg(json_build_object(
                   'well_id', well_id, 'row', row, 'col', col, 'state', state,
                   'confidence', confidence, 'class_name', class_name, 'box', box,
                   'flags', flags, 'n_detections', n_detections) ORDER BY row, col)
        FROM run_wells_rows GROUP BY run_id
        """
    )
    op.drop_table("run_wells_rows")


def downgrade() -> None:
    op.rename_table("run_wells", "run_wells_doc")
    op.execute("ALTER TABLE run_wells_doc RENAME CONSTRAINT pk_run_wells TO pk_run_wells_doc")
    op.execute(
        "ALTER TABLE run_wells_doc RENAME CONSTRAINT fk_run_wells_run_id_runs "
        "TO fk_run_wells_doc_run_id_runs"
    )
    op.create_table(
        "run_wells",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("well_id", sa.String(length=4), nullable=False),
        sa.Column("row", sa.SmallInteger(), nullable=False),
        sa.Column("col", sa.SmallInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("class_name", sa.String(length=32), nullable=True),
        sa.Column("box", postgresql.ARRAY(sa.Float()), nullable=True),
        sa.Column("flags", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column("n_detections", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.run_id"],
            name=op.f("fk_run_wells_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "well_id", name=op.f("pk_run_wells")),
    )
    op.execute(
        """
        INSERT INTO run_wells (run_id, well_id, row, col, state, confidence, class_name, box,
                               flags, n_detections)
        SELECT d.run_id, w->>'well_id', (w->>'row')::smallint, (w->>'col')::smallint,
               w->>'state', (w->>'confidence')::float8, w->>'class_name',
               CASE WHEN json_typeof(w->'box') = 'array'
                    THEN ARRAY(SELECT json_array_elements_text(w->'box'))::float8[] END,
               ARRAY(SELECT json_array_elements_text(w->'flags'))::varchar(32)[],
               (w->>'n_detections')::smallint
        FROM run_wells_doc d, json_array_elements(d.wells) AS w
        """
    )
    op.drop_table("run_wells_doc")

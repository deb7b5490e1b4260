"""Runs, their wells and rows, and the pooled sample each run belongs to.

A run's identity is the edge-minted `run_id`; `edit` counts edits on the edge so an upsert
with an older or equal edit is a no-op (idempotent ingest). A sample is keyed by
(site, sample_number): LIMS numbering is per site, so two sites may reuse a number.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("site_id", "sample_number", name="uq_samples_site_sample"),
        Index("ix_samples_last_read", "last_read_at", "id"),
        Index("ix_samples_site_last_read", "site_id", "last_read_at"),
        Index("ix_samples_sample_number", "sample_number"),
        Index("ix_samples_submission_number", "submission_number"),
        Index("ix_samples_flags", "flags", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    sample_number: Mapped[str] = mapped_column(String(64))
    submission_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    n_runs: Mapped[int] = mapped_column(Integer, default=0)
    n_plates: Mapped[int] = mapped_column(Integer, default=0)
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    n_cols: Mapped[int] = mapped_column(SmallInteger, default=12)
    distribution: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    # core.pooling.SampleSummary as JSON: what the CSV export and the detail page render.
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    gmt: Mapped[float | None] = mapped_column(Float, nullable=True)
    flags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    first_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_sample_read", "sample_id", "read_at"),
        Index("ix_runs_device_read", "device_id", "read_at"),
        Index("ix_runs_plate", "plate_id"),
        Index("ix_runs_reviewed", "reviewed_at", postgresql_where=text("reviewed_at IS NOT NULL")),
        Index(
            "ix_runs_needs_review",
            "site_id",
            "read_at",
            postgresql_where=text("status = 'needs_review'"),
        ),
    )

    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    edit: Mapped[int] = mapped_column(Integer, default=0)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"))
    sample_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("samples.id", ondelete="RESTRICT"))
    plate_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    sample_number: Mapped[str] = mapped_column(String(64))
    submission_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    n_rows: Mapped[int] = mapped_column(SmallInteger, default=8)
    n_cols: Mapped[int] = mapped_column(SmallInteger, default=12)
    # current | superseded (same plate re-read later) | deleted (by the edge or a manager) |
    # needs_review (the edge's plate-quality gate held it: shown, never pooled; s003)
    status: Mapped[str] = mapped_column(String(16), default="current")
    review_reasons: Mapped[list[str]] = mapped_column(
        ARRAY(String(40)), default=list, server_default="{}"
    )
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    flags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    # Everything else of the wire message (dilution, model, calibration ...) kept verbatim.
    extra: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    image_keys: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # An operator's review (o001): when, and how many wells they changed from the model's call
    # (the wells document keeps each well's `model_state`); field accuracy sums these.
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    n_corrected: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")


class RunWell(Base):
    """A run's wells: one JSON document per run, in plate order (row, then column), each well
    `{well_id, row, col, state, confidence, class_name, box, flags, n_detections}` exactly as
    the API serves it. Wells are only ever read whole; one row instead of 96 is most of what
    makes ingest fast (migration s002)."""

    __tablename__ = "run_wells"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    wells: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class RunRow(Base):
    __tablename__ = "run_rows"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    row: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    label: Mapped[str] = mapped_column(String(4))
    endpoint: Mapped[int] = mapped_column(SmallInteger)
    titre: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    counted: Mapped[bool] = mapped_column(default=True)
    counted_titre: Mapped[float | None] = mapped_column(Float, nullable=True)
    exclusion_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)


class DeviceEvent(Base):
    """Applied RunEvents, for idempotency on (run_id, edit) of events too."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    edit: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


# Search indexes (cloud.crud.search): prefix lookups in any letter case. Expressions over the
# mapped columns, so declared after the classes. The run's description lives in its wire
# document; a literal key keeps the query's expression identical to the index's.
RUN_DESCRIPTION = Run.extra.op("->>")(literal_column("'description'"))


def _prefix_index(name: str, expr: Any, **kw: Any) -> Index:
    return Index(name, expr.label("key"), postgresql_ops={"key": "text_pattern_ops"}, **kw)


SEARCH_INDEXES = (
    _prefix_index("ix_samples_sample_number_prefix", func.lower(Sample.sample_number)),
    _prefix_index("ix_samples_submission_prefix", func.lower(Sample.submission_number)),
    # Current runs only, carrying sample_id: a broad description prefix (thousands of runs)
    # is answered from the index alone, without a heap fetch per run.
    _prefix_index(
        "ix_runs_description_prefix",
        func.lower(RUN_DESCRIPTION),
        postgresql_include=["sample_id"],
        postgresql_where=Run.status == "current",
    ),
)

"""The model registry: signed releases, their assignment to sites or device groups, and each
device's progress through a rollout (canary first)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow

# Assignment stages: canary (only the canary device is told) -> rolling (every target) -> done
# (every target switched); halted (the canary refused or rolled back); superseded (a newer
# assignment for the same site).
STAGES = ("canary", "rolling", "done", "halted", "superseded")
# Device rollout states: waiting (not told yet), notified, then what the device reports;
# withdrawn: its assignment was superseded before the rollout ended.
ROLLOUT_STATES = (
    "withdrawn",
    "waiting",
    "notified",
    "downloaded",
    "refused",
    "shadowing",
    "switched",
    "rolled_back",
    "failed",
)


class ModelRelease(Base):
    """One signed release: the signed manifest as published and where its files live."""

    __tablename__ = "model_releases"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_releases_name_version"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(16))
    # core.ota.SignedManifest as JSON (the signature is public; the key never is).
    signed_manifest: Mapped[dict[str, Any]] = mapped_column(JSONB)
    object_prefix: Mapped[str] = mapped_column(String(200))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelAssignment(Base):
    __tablename__ = "model_assignments"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    release_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("model_releases.id", ondelete="RESTRICT"), index=True
    )
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="RESTRICT"))
    # A device group; NULL means every device of the site.
    device_ids: Mapped[list[uuid.UUID] | None] = mapped_column(
        ARRAY(UUID(as_uuid=True)), nullable=True
    )
    canary_device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="RESTRICT")
    )
    shadow_plates: Mapped[int] = mapped_column(Integer)
    agreement_threshold: Mapped[float] = mapped_column(Float)
    stage: Mapped[str] = mapped_column(String(16), default="canary")
    # Bumped on every change devices must hear about (promotion, the admin's confirmation).
    revision: Mapped[int] = mapped_column(Integer, default=1)
    switch_confirmed: Mapped[bool] = mapped_column(default=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelRollout(Base):
    """One device's progress through one assignment, from its reports."""

    __tablename__ = "model_rollouts"

    assignment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("model_assignments.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    # The assignment revision last published to the device (0: never).
    notified_revision: Mapped[int] = mapped_column(Integer, default=0)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    shadow_plates: Mapped[int] = mapped_column(Integer, default=0)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    current_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    candidate_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    needs_review_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

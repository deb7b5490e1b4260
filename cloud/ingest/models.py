"""The ingest's own table: messages the cloud could not accept (migration `s001`).

A dead letter keeps what arrived (the first 64 KiB, its size and SHA-256), where it came from
and why it was refused, so a person can look at it; the device got a `rejected` ack when the
message named a run, and stops retrying it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow

DEAD_LETTER_KEEP_BYTES = 64 * 1024


class DeadLetter(Base):
    __tablename__ = "ingest_dead_letters"
    __table_args__ = (
        Index("ix_ingest_dead_letters_received", "received_at"),
        Index("ix_ingest_dead_letters_device", "site", "device", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    topic: Mapped[str] = mapped_column(String(512))
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    edit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_bytes: Mapped[int] = mapped_column(Integer)
    payload_sha256: Mapped[str] = mapped_column(String(64))

"""API schemas of the model registry and rollouts (`/api/v1/models`, `/api/v1/device/model`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.rollout import ModelNotice
from core.topics import SLUG_PATTERN

Slug = Field(pattern=SLUG_PATTERN)


class ReleasePublic(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    manifest_sha256: str
    key_id: str
    published_at: datetime
    plate_formats: list[int]
    modes: list[str]
    metrics: dict[str, float]
    gate_accepted: bool | None


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    site_id: uuid.UUID
    # A device group of the site; left out: every active device of the site.
    devices: list[str] | None = Field(default=None, min_length=1, max_length=500)
    canary: str = Slug
    shadow_plates: int = Field(default=20, ge=1, le=10_000)
    agreement_threshold: float = Field(default=0.98, ge=0.5, le=1.0)


class RolloutPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    assignment_id: uuid.UUID
    stage: str
    name: str
    version: str
    site_id: uuid.UUID
    device_id: uuid.UUID
    device_slug: str
    canary: bool
    state: str
    shadow_plates: int
    agreement: float | None
    current_ms: float | None
    candidate_ms: float | None
    reason: str | None
    reported_at: datetime | None


class AssignmentPublic(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    site_id: uuid.UUID
    stage: str
    revision: int
    canary_device_id: uuid.UUID
    shadow_plates: int
    agreement_threshold: float
    switch_confirmed: bool
    created_at: datetime


class DownloadFile(BaseModel):
    path: str
    sha256: str
    size_bytes: int
    url: str


class DeviceModelOffer(BaseModel):
    """What a device downloads: the notice again, the signed manifest exactly as published
    (check its signature with the device's public key), and presigned GET URLs."""

    notice: ModelNotice
    signed_manifest: dict[str, Any]
    manifest_url: str
    files: list[DownloadFile]
    expires_in: int


class ReportAck(BaseModel):
    state: str
    stage: str

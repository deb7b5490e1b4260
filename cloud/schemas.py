"""API request and response bodies, kept apart from the tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from cloud.models import Role
from core.enrollment import EnrollmentBundle

__all__ = ["EnrollmentBundle"]  # the one definition lives in core (the edge reads it too)

Slug = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$", min_length=2, max_length=40)
Password = Field(min_length=12, max_length=256)
Template = Literal["labware", "labware-legacy"]


class Message(BaseModel):
    detail: str


class LoginRequest(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class TokenPairPublic(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Password


class ResetRequest(BaseModel):
    email: str = Field(min_length=1, max_length=320)


class ResetConfirm(BaseModel):
    token: str = Field(min_length=16, max_length=256)
    new_password: str = Password


class SiteCreate(BaseModel):
    slug: str = Slug
    name: str = Field(min_length=1, max_length=200)
    csv_template: Template = "labware"
    protective_titre: int | None = Field(default=None, ge=1, le=1_000_000)


class SiteUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    csv_template: Template | None = None
    protective_titre: int | None = Field(default=None, ge=1, le=1_000_000)
    # false disables the site: its devices lose broker and API access until it is enabled.
    enabled: bool | None = None
    # "Allow corrected plates for training": the site's reviewed plates (raw images included)
    # may go into `microplate-cloud dataset export`.
    allow_training: bool | None = None


class SitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    slug: str
    name: str
    csv_template: str
    protective_titre: int | None
    disabled_at: datetime | None = None
    allow_training: bool = False


class UserCreate(BaseModel):
    email: EmailStr
    password: str = Password
    role: Role
    full_name: str = Field(default="", max_length=200)
    site_ids: list[uuid.UUID] = Field(default_factory=list, max_length=500)


class UserUpdate(BaseModel):
    role: Role | None = None
    is_active: bool | None = None
    full_name: str | None = Field(default=None, max_length=200)
    site_ids: list[uuid.UUID] | None = Field(default=None, max_length=500)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    full_name: str
    role: Role
    is_active: bool
    site_ids: list[uuid.UUID]


class DeviceCreate(BaseModel):
    site_id: uuid.UUID
    slug: str = Slug
    name: str = Field(default="", max_length=200)


class DevicePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    site_id: uuid.UUID
    slug: str
    name: str
    mqtt_username: str
    status: str
    created_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None
    last_status: dict[str, Any] | None


MAX_IMAGE_BYTES = 32 * 1024 * 1024  # a plate photo is a few MB


class PresignRequest(BaseModel):
    run_id: uuid.UUID
    kind: Literal["raw", "annotated", "thumbnail"]
    # The exact size of the JPEG to upload: signed into the URL (with its content type), so
    # the store refuses any other body (a 200 MB HTML file once went through).
    size_bytes: int = Field(ge=1, le=MAX_IMAGE_BYTES)


class PresignedUrl(BaseModel):
    url: str
    method: Literal["GET", "PUT"]
    key: str
    expires_in: int
    headers: dict[str, str] = Field(default_factory=dict)


class DeviceIdentity(BaseModel):
    device_id: uuid.UUID
    site: str
    device: str


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: datetime
    action: str
    actor_user_id: uuid.UUID | None
    actor_device_id: uuid.UUID | None
    target_type: str | None
    target_id: str | None
    site_id: uuid.UUID | None
    ip: str | None
    detail: dict[str, Any]

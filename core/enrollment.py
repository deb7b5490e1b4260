"""The enrollment bundle: what the cloud hands a new device once, and what `microplate-edge
enroll` reads. One definition for both sides, so the two cannot drift apart.

The bundle defines the device's identity. The broker ACL binds the MQTT user
``{site}.{device}`` to the topics ``microplate/v1/{site}/{device}/...``; an appliance that
publishes under any other site/device id is silently dropped by the broker. So the bundle's
``site`` and ``device`` slugs are what the appliance must use as its `site_id`/`device_id`,
and `identity_problem` says, in one sentence, when a configuration disagrees with its
credentials. ``device_id`` in the bundle is the cloud's record id (a UUID), not a topic id.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from core.topics import SLUG_PATTERN

BUNDLE_FORMAT: Literal[1] = 1
DEFAULT_TTL = timedelta(days=7)


def device_username(site: str, device: str) -> str:
    """The MQTT user name (and client id) of a device: the ACL ties it to its own topics."""
    return f"{site}.{device}"


class EnrollmentBundle(BaseModel):
    """Returned once, at provisioning: the only time the secrets are visible."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = BUNDLE_FORMAT
    device_id: UUID = Field(description="the cloud's record id of the device (not a topic id)")
    site: str = Field(pattern=SLUG_PATTERN, description="site slug: the appliance's site_id")
    device: str = Field(pattern=SLUG_PATTERN, description="device slug: the appliance's device_id")
    broker_url: str = Field(min_length=1, max_length=500)
    mqtt_username: str = Field(min_length=1, max_length=200)
    mqtt_password: str = Field(min_length=1, max_length=500)
    api_base_url: str = Field(min_length=1, max_length=500)
    device_token: str = Field(min_length=1, max_length=500)
    ca_cert: str | None = Field(default=None, max_length=100_000)
    # Absent in bundles made before expiry existed: those are accepted.
    issued_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EnrollmentBundle:
        expected = device_username(self.site, self.device)
        if self.mqtt_username != expected:
            raise ValueError(
                f"mqtt_username {self.mqtt_username!r} does not belong to {self.site}/"
                f"{self.device} (expected {expected!r}): this bundle was edited or is damaged"
            )
        if self.issued_at and self.expires_at and self.expires_at <= self.issued_at:
            raise ValueError("expires_at is not after issued_at")
        return self

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (now or datetime.now(timezone.utc)) >= self.expires_at


def identity_problem(*, site_id: str, device_id: str, username: str) -> str | None:
    """One operator sentence when the appliance's identity and its MQTT user disagree."""
    if not username:
        return None
    expected = device_username(site_id, device_id)
    if username == expected:
        return None
    return (
        f"This appliance is set up as {site_id}/{device_id} but its credentials belong to "
        f"{username!r}; the broker drops everything it sends. Enroll it again with its own "
        "bundle (microplate-edge enroll BUNDLE)."
    )

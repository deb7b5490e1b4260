"""Device registry: provisioning, revocation, API token checks, broker credential files."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.crud.scope import Scope
from cloud.models import Device, Site
from cloud.mqtt_auth import (
    BrokerAccount,
    hash_mqtt_password,
    reload_broker,
    render_acl_file,
    render_dynsec_config,
    render_password_file,
    write_atomic,
)
from cloud.security import digest_token, digests_match, new_device_token, parse_device_token, utcnow
from cloud.settings import CloudSettings
from core.enrollment import EnrollmentBundle, device_username

logger = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A device change that cannot be made (message is safe to show)."""


@dataclass(frozen=True)
class Enrollment:
    device: Device
    mqtt_password: str
    api_token: str


def list_devices(
    session: Session, *, scope: Scope, site_id: uuid.UUID | None = None
) -> list[Device]:
    query = select(Device).where(scope.clause(Device.site_id)).order_by(Device.mqtt_username)
    if site_id is not None:
        query = query.where(Device.site_id == site_id)
    return list(session.scalars(query))


def get_device(session: Session, *, device_id: uuid.UUID, scope: Scope) -> Device | None:
    device = session.get(Device, device_id)
    if device is None or not scope.allows(device.site_id):
        return None
    return device


def provision_device(session: Session, *, site: Site, slug: str, name: str = "") -> Enrollment:
    """Create a device with fresh MQTT and API credentials; the secrets exist only here."""
    if site.disabled_at is not None:
        raise DeviceError(f"site {site.slug!r} is disabled; enable it before adding devices")
    taken = session.scalar(select(Device).where(Device.site_id == site.id, Device.slug == slug))
    if taken is not None:
        raise DeviceError(f"site {site.slug!r} already has a device {slug!r}")
    device_id = uuid.uuid4()
    mqtt_password = secrets.token_urlsafe(24)
    api_token = new_device_token(device_id)
    device = Device(
        id=device_id,
        site_id=site.id,
        slug=slug,
        name=name,
        mqtt_username=device_username(site.slug, slug),
        mqtt_password_hash=hash_mqtt_password(mqtt_password),
        api_token_digest=digest_token(api_token),
        status="active",
    )
    session.add(device)
    session.flush()
    session.refresh(device)
    return Enrollment(device=device, mqtt_password=mqtt_password, api_token=api_token)


def enrollment_bundle(
    enrollment: Enrollment, *, site: Site, settings: CloudSettings
) -> EnrollmentBundle:
    """The bundle for a just-provisioned device: its identity, credentials and an expiry."""
    ca_cert = None
    if settings.ca_cert_file is not None:
        ca_cert = settings.ca_cert_file.read_text(encoding="utf-8")
    issued = utcnow()
    return EnrollmentBundle(
        device_id=enrollment.device.id,
        site=site.slug,
        device=enrollment.device.slug,
        broker_url=settings.mqtt_broker_url,
        mqtt_username=enrollment.device.mqtt_username,
        mqtt_password=enrollment.mqtt_password,
        api_base_url=settings.api_base_url,
        device_token=enrollment.api_token,
        ca_cert=ca_cert,
        issued_at=issued,
        expires_at=issued + timedelta(hours=settings.enrollment_ttl_hours),
    )


def revoke_device(session: Session, *, device: Device) -> None:
    device.status = "revoked"
    device.revoked_at = utcnow()
    # Replace the digest too, so even a stale cached row could not match the old token.
    device.api_token_digest = digest_token(secrets.token_urlsafe(32))
    session.flush()


def authenticate_device(session: Session, *, token: str) -> Device | None:
    device_id = parse_device_token(token)
    if device_id is None:
        return None
    device = session.get(Device, device_id)
    if device is None or device.status != "active" or device.site.disabled_at is not None:
        return None
    if not digests_match(token, device.api_token_digest):
        return None
    return device


def sync_broker_files(session: Session, settings: CloudSettings) -> bool:
    """Rewrite Mosquitto's password and ACL files (and the device listener's
    dynamic-security file, when configured) from the active devices, then reload.

    Returns False when the files are not configured (nothing to do). Called after every
    device change, inside the same transaction, so a failed write aborts the change.
    """
    if settings.mqtt_password_file is None or settings.mqtt_acl_file is None:
        return False
    rows = session.execute(
        select(Device, Site.slug)
        .join(Site, Site.id == Device.site_id)
        .where(Device.status == "active", Site.disabled_at.is_(None))
        .order_by(Device.mqtt_username)
    ).all()
    accounts = [
        BrokerAccount(
            username=device.mqtt_username,
            password_hash=device.mqtt_password_hash,
            site=site_slug,
            device=device.slug,
        )
        for device, site_slug in rows
    ]
    service: list[str] = []
    ingest_user = None
    if settings.mqtt_ingest_password is not None:
        ingest_user = settings.mqtt_ingest_username
        ingest_hash = hash_mqtt_password(settings.mqtt_ingest_password.get_secret_value())
        service.append(f"{ingest_user}:{ingest_hash}")
    write_atomic(settings.mqtt_password_file, render_password_file(accounts, service=service))
    write_atomic(settings.mqtt_acl_file, render_acl_file(accounts, ingest_username=ingest_user))
    if settings.mqtt_dynsec_file is not None:
        write_atomic(settings.mqtt_dynsec_file, render_dynsec_config(accounts))
    reload_broker(settings.mosquitto_pid_file)
    logger.info("broker files rewritten for %s active device(s)", len(accounts))
    return True

"""Send devices the cloud's desired config: a retained QoS 1 DesiredConfig on each ``config`` topic.

Today it carries one setting, `upload_raw`, which follows the site's "allow corrected plates for
training" (`sites.allow_training`): an opted-in site's appliances upload the raw photo of every
plate, the others do not. Every switch raises `sites.config_revision`; a device is pending while
its `config_sent_revision` is lower, and is marked sent only once the broker acknowledged the
message, so a config never delivered (broker down) goes out on the next pass: after the next
site change or enrollment, or `microplate-cloud models notify`, which
`microplate-cloud-notify.timer` runs every 30 s. A device enrolled later gets the
retained config of its site at once. The device API still refuses raw presigns for sites not
opted in, whatever an old retained message said.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cloud.models import Device, Site
from cloud.models.base import utcnow
from cloud.ota_notify import NotifyError, notifier, publish_retained
from cloud.settings import CloudSettings
from core.topics import Topics
from core.wire import DesiredConfig, encode_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingConfig:
    device_id: uuid.UUID
    topic: str
    config: DesiredConfig


def pending_configs(session: Session) -> list[PendingConfig]:
    """The desired configs of active devices of enabled sites not yet acknowledged."""
    rows = session.execute(
        select(Device.id, Device.slug, Site.slug, Site.config_revision, Site.allow_training)
        .join(Site, Device.site_id == Site.id)
        .where(
            Device.status == "active",
            Site.disabled_at.is_(None),
            Device.config_sent_revision < Site.config_revision,
        )
        .order_by(Site.slug, Device.slug)
    ).all()
    now = utcnow()
    return [
        PendingConfig(
            device_id=device_id,
            topic=Topics(site_slug, device_slug).config,
            config=DesiredConfig(revision=revision, issued_at=now, upload_raw=allow),
        )
        for device_id, device_slug, site_slug, revision, allow in rows
    ]


def publish_configs(
    settings: CloudSettings, sessions: sessionmaker[Session], *, timeout_s: float = 5.0
) -> int:
    """Publish every pending desired config; return how many the broker acknowledged."""
    with sessions() as session:
        pending = pending_configs(session)
    if not pending:
        return 0
    sent = 0
    with notifier(settings, timeout_s) as client:
        for item in pending:
            publish_retained(client, item.topic, encode_message(item.config), timeout_s, "config")
            with sessions() as session:
                device = session.get(Device, item.device_id)
                if device is not None and device.config_sent_revision < item.config.revision:
                    device.config_sent_revision = item.config.revision
                    session.commit()
            sent += 1
            logger.info(
                "config revision %s (upload_raw=%s) sent to %s",
                item.config.revision,
                item.config.upload_raw,
                item.topic,
            )
    return sent


def publish_configs_quietly(settings: CloudSettings, sessions: sessionmaker[Session]) -> None:
    """For the API: a broker outage must not fail the admin's change (it stays pending)."""
    try:
        publish_configs(settings, sessions)
    except (NotifyError, ValueError) as exc:
        logger.warning("desired configs left pending: %s", exc)

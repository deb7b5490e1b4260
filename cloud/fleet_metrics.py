"""Fleet metrics the cloud knows from Postgres, appended to the API's /metrics.

The appliances' own /metrics say nothing once an appliance is off or unreachable; the cloud
still knows when it last heard from each one (`devices.last_seen_at`, set by the ingest on every
run and status message). One small query per scrape (one row per device); every API process
reports the same values, so alert rules take `max by (site, device)`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from cloud.models import Device, Site

logger = logging.getLogger(__name__)

LAST_SEEN = "microplate_device_last_seen_timestamp_seconds"
FLEET_UP = "microplate_fleet_query_up"


class FleetCollector(Collector):
    def __init__(self, engine: Engine | None) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        seen = GaugeMetricFamily(
            LAST_SEEN,
            "Unix time the cloud last received a message from the device (active devices)",
            labels=["site", "device"],
        )
        up = 0.0
        if self.engine is not None:
            stmt = (
                select(Site.slug, Device.slug, Device.last_seen_at)
                .join(Site, Device.site_id == Site.id)
                .where(Device.status == "active", Device.last_seen_at.is_not(None))
            )
            try:
                with self.engine.connect() as conn:
                    for site, device, at in conn.execute(stmt):
                        if at is not None:
                            seen.add_metric([site, device], at.timestamp())
                up = 1.0
            except SQLAlchemyError as exc:
                logger.warning("fleet metrics: database unavailable (%s)", type(exc).__name__)
        yield seen
        yield GaugeMetricFamily(FLEET_UP, "1 when the fleet query succeeded", value=up)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(LAST_SEEN, "", labels=["site", "device"])
        yield GaugeMetricFamily(FLEET_UP, "")


def fleet_exposition(engine: Engine) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(engine))
    return generate_latest(registry)

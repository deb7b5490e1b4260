"""Fleet metrics the cloud knows from Postgres, appended to the API's /metrics.

The appliances' own /metrics say nothing once an appliance is off or unreachable; the cloud
still knows when it last heard from each one (`devices.last_seen_at`, set by the ingest on every
run and status message). One small query per scrape (one row per device); every API process
reports the same values, so alert rules take `max by (site, device)`. Field accuracy (the share
of wells operators corrected, `cloud.crud.field`) per site, device and model version over the
last 30 days, and the devices per model rollout stage and state, come from two more grouped
queries on the same scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from cloud.crud.field import field_totals
from cloud.crud.ota import rollout_counts
from cloud.models import Device, Site

logger = logging.getLogger(__name__)

LAST_SEEN = "microplate_device_last_seen_timestamp_seconds"
FIELD_WELLS = "microplate_field_wells_30d"
FIELD_CORRECTED = "microplate_field_wells_corrected_30d"
FIELD_RATIO = "microplate_field_wells_corrected_ratio_30d"
ROLLOUT = "microplate_model_rollout_devices"
_ROLLOUT_LABELS = ["site", "model", "stage", "state"]
_FIELD_LABELS = ["site", "device", "model"]
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
        wells = GaugeMetricFamily(
            FIELD_WELLS, "Wells read in the last 30 days (reads not deleted)", labels=_FIELD_LABELS
        )
        corrected = GaugeMetricFamily(
            FIELD_CORRECTED,
            "Wells an operator corrected from the model's call, last 30 days",
            labels=_FIELD_LABELS,
        )
        ratio = GaugeMetricFamily(
            FIELD_RATIO,
            "Share of wells operators corrected, last 30 days (field accuracy = 1 - this)",
            labels=_FIELD_LABELS,
        )
        rollout = GaugeMetricFamily(
            ROLLOUT,
            "Devices per model assignment stage and device rollout state (not superseded)",
            labels=_ROLLOUT_LABELS,
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
                    for site, device, model, n, n_corrected in field_totals(conn):
                        wells.add_metric([site, device, model], n)
                        corrected.add_metric([site, device, model], n_corrected)
                        if n:
                            ratio.add_metric([site, device, model], n_corrected / n)
                    for site, model, stage, state, count in rollout_counts(conn):
                        rollout.add_metric([site, model, stage, state], count)
                up = 1.0
            except SQLAlchemyError as exc:
                logger.warning("fleet metrics: database unavailable (%s)", type(exc).__name__)
        yield seen
        yield wells
        yield corrected
        yield ratio
        yield rollout
        yield GaugeMetricFamily(FLEET_UP, "1 when the fleet query succeeded", value=up)

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(LAST_SEEN, "", labels=["site", "device"])
        for name in (FIELD_WELLS, FIELD_CORRECTED, FIELD_RATIO):
            yield GaugeMetricFamily(name, "", labels=_FIELD_LABELS)
        yield GaugeMetricFamily(ROLLOUT, "", labels=_ROLLOUT_LABELS)
        yield GaugeMetricFamily(FLEET_UP, "")


def fleet_exposition(engine: Engine) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(engine))
    return generate_latest(registry)

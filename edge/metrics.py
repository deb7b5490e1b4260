"""Prometheus metrics of one appliance, in their own registry (served by the API at /metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inference_seconds = Histogram(
            "microplate_inference_seconds",
            "Detector inference time per plate",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.pipeline_seconds = Histogram(
            "microplate_pipeline_seconds",
            "Whole pipeline time per plate (decode to CSV written and outbox committed)",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.runs_total = Counter(
            "microplate_runs", "Plates processed, by outcome", ["status"], registry=r
        )
        self.csv_written_total = Counter(
            "microplate_csv_written", "LabWare CSV files written to the share", registry=r
        )
        self.queue_depth = Gauge("microplate_queue_depth", "Plates waiting", registry=r)
        self.outbox_depth = Gauge(
            "microplate_outbox_depth", "Outbox entries not yet acknowledged", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "microplate_outbox_oldest_age_seconds",
            "Age of the oldest unacknowledged outbox entry",
            registry=r,
        )
        self.disk_free_bytes = Gauge(
            "microplate_disk_free_bytes", "Free bytes on the data disk", registry=r
        )
        self.disk_floor_bytes = Gauge(
            "microplate_disk_floor_bytes",
            "Free-disk floor below which capture is refused (retention.disk_floor_mb)",
            registry=r,
        )
        self.camera_up = Gauge(
            "microplate_camera_up", "1 when the capture source works", registry=r
        )
        self.retention_deleted_total = Counter(
            "microplate_retention_deleted_runs", "Runs removed by retention", registry=r
        )

    def bind(
        self,
        *,
        queue_depth: Callable[[], float],
        backlog: Callable[[], tuple[int, float | None]],
        disk_free: Callable[[], float],
        camera_up: Callable[[], float],
        disk_floor: Callable[[], float] | None = None,
    ) -> None:
        """Gauges read live values at scrape time, so they can never go stale."""
        self.queue_depth.set_function(queue_depth)
        self.outbox_depth.set_function(lambda: float(backlog()[0]))
        self.outbox_oldest_age.set_function(lambda: float(backlog()[1] or 0.0))
        self.disk_free_bytes.set_function(disk_free)
        self.camera_up.set_function(camera_up)
        if disk_floor is not None:
            self.disk_floor_bytes.set_function(disk_floor)

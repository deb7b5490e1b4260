"""Prometheus metrics of one ingest worker, read from its live counters at scrape time.

Each worker serves them on its own loopback port (`--metrics-port` plus `--metrics-port-offset`,
the systemd instance number), which the monitoring role's Prometheus scrapes. A collector reads
`IngestStats` when scraped instead of mirroring every increment, so the worker's hot path is
untouched and the values can never drift from what the worker logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.ingest.worker import IngestWorker

logger = logging.getLogger(__name__)

# (family name without _total, help, IngestStats attribute)
_COUNTERS = (
    ("microplate_ingest_received", "MQTT messages taken from the broker", "received"),
    ("microplate_ingest_batches", "Batches processed", "batches"),
    ("microplate_ingest_runs_written", "Runs upserted in Postgres", "runs_written"),
    ("microplate_ingest_events_applied", "Device status/events applied", "events_applied"),
    ("microplate_ingest_dead_letters", "Messages refused and dead-lettered", "dead_letters"),
    ("microplate_ingest_acks_sent", "Acks published to the devices", "acks_sent"),
    ("microplate_ingest_db_retries", "Batch transactions retried (database away)", "db_retries"),
)


class IngestCollector(Collector):
    def __init__(self, worker: IngestWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        stats = self.worker.stats
        for name, doc, attr in _COUNTERS:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(getattr(stats, attr)))
            yield family
        yield GaugeMetricFamily(
            "microplate_ingest_outstanding_messages",
            "Messages received from the broker and not yet written or refused",
            value=float(self.worker.outstanding),
        )
        yield GaugeMetricFamily(
            "microplate_ingest_connected",
            "1 while the worker holds its broker session",
            value=1.0 if self.worker.connected else 0.0,
        )

    def describe(self) -> Iterator[Metric]:
        # Names only (the metric-name check in tests/ops reads them without a worker).
        for name, doc, _ in _COUNTERS:
            yield CounterMetricFamily(name, doc)
        yield GaugeMetricFamily("microplate_ingest_outstanding_messages", "")
        yield GaugeMetricFamily("microplate_ingest_connected", "")


def serve_metrics(worker: IngestWorker, *, port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve the worker's metrics on addr:port from a daemon thread (shutdown() stops it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(worker))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    logger.info("ingest metrics on http://%s:%d/metrics", addr, port)
    return server

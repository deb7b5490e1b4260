"""Metrics for monitoring that the cloud computes: the fleet's last-seen times on the API's
/metrics, and an ingest worker's own /metrics port."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cloud.db import make_engine
from cloud.ingest.metrics import serve_metrics
from cloud.ingest.worker import IngestOptions, IngestWorker
from tests.cloud.conftest import free_port, make_settings
from tests.cloud.world import World, build_world, open_client


def samples(body: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == name
    ]


@pytest.fixture(scope="module")
def world(migrated_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = make_settings(
        migrated_db, tmp_path_factory.mktemp("fleet"), metrics_token=METRICS_TOKEN
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


METRICS_TOKEN = "metrics-token-for-the-fleet-tests"


def test_api_metrics_report_when_each_device_was_last_seen(world: World) -> None:
    seen = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    engine = make_engine(world.settings)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE devices SET last_seen_at = :at WHERE id = :id"),
                {"at": seen, "id": world.device_a},
            )
    finally:
        engine.dispose()
    body = world.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    last_seen = samples(body, "microplate_device_last_seen_timestamp_seconds")
    ours = {(lab["site"], lab["device"]): v for lab, v in last_seen}
    assert ours[(world.slug_a, "reader-1")] == seen.timestamp()
    # Never seen: no sample (the offline alert must not fire for a device not yet installed).
    assert (world.slug_b, "reader-1") not in ours
    assert samples(body, "microplate_fleet_query_up") == [({}, 1.0)]


def test_ingest_worker_serves_its_counters(migrated_db: str, tmp_path: Path) -> None:
    worker = IngestWorker(make_settings(migrated_db, tmp_path), IngestOptions(client_id="m"))
    port = free_port()
    server = serve_metrics(worker, port=port)
    try:
        worker.stats.received = 7
        worker.stats.dead_letters = 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        worker.engine.dispose()
    assert samples(body, "microplate_ingest_received_total") == [({}, 7.0)]
    assert samples(body, "microplate_ingest_dead_letters_total") == [({}, 2.0)]
    assert samples(body, "microplate_ingest_connected") == [({}, 0.0)]
    assert samples(body, "microplate_ingest_outstanding_messages") == [({}, 0.0)]


def test_ingest_metrics_port_is_base_plus_instance() -> None:
    import argparse

    from cloud.ingest.cli import metrics_port, options_from_args

    base = {"batch_size": 100, "batch_wait": 0.05, "client_id": "w", "share_group": "ingest"}
    assert metrics_port(argparse.Namespace(metrics_port=9410, metrics_port_offset=3)) == 9413
    assert metrics_port(argparse.Namespace(metrics_port=0, metrics_port_offset=3)) == 0
    too_high = argparse.Namespace(**base, metrics_port=65535, metrics_port_offset=1)
    with pytest.raises(ValueError, match="metrics-port"):
        options_from_args(too_high)
    options_from_args(argparse.Namespace(**base, metrics_port=9410, metrics_port_offset=1))

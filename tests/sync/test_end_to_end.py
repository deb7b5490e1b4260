"""Appliance outbox -> SyncWorker -> Mosquitto -> IngestWorker -> Postgres -> ack -> delivered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.sync.conftest import Broker, ingest_worker
from tests.sync.world import (
    deletion,
    new_run,
    open_store,
    queue_events,
    queue_runs,
    sync_settings,
    template_message,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]


def wait_for(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[object]:
    with ingest_worker(broker, cloud_db, "ingest-e2e", batch_wait_s=0.02) as worker:
        yield worker


def scalar(url: str, sql: str, **params: object) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def test_runs_and_deletions_reach_postgres_and_are_acked(
    broker: Broker, cloud_db: str, ingest: object, tmp_path: Path
) -> None:
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    acc = broker.devices[0]
    store = open_store(tmp_path / "edge.db")
    template = template_message(acc.site, acc.device)
    runs = [new_run(template, f"S-{i % 7:03d}", seq=i) for i in range(60)]
    queue_runs(store, runs)
    queue_events(store, [deletion(runs[3]), deletion(runs[4])])
    worker = SyncWorker(
        sync_settings(broker.port, acc),
        outbox=Outbox(store),
        site_id=acc.site,
        device_id=acc.device,
    )
    worker.start()
    try:
        wait_for(lambda: outbox.backlog(store)[0] == 0, 30, "an empty outbox")
    finally:
        worker.stop()
    assert scalar(cloud_db, "SELECT count(*) FROM runs") == 60
    assert scalar(cloud_db, "SELECT sum(json_array_length(wells)) FROM run_wells") == 60 * 96
    assert scalar(cloud_db, "SELECT count(*) FROM run_rows") == 60 * 8
    assert scalar(cloud_db, "SELECT count(*) FROM runs WHERE status = 'deleted'") == 2
    # Pooled: 7 samples; the two deleted runs no longer count.
    assert scalar(cloud_db, "SELECT count(*) FROM samples") == 7
    assert scalar(cloud_db, "SELECT sum(n_plates) FROM samples") == 58
    assert scalar(cloud_db, "SELECT sum(rows_total) FROM samples") == 58 * 8
    assert scalar(cloud_db, "SELECT count(*) FROM ingest_dead_letters") == 0
    seen = scalar(
        cloud_db,
        "SELECT last_seen_at IS NOT NULL FROM devices WHERE slug = :d AND mqtt_username = :u",
        d=acc.device,
        u=acc.username,
    )
    assert seen is True
    store.close()


def test_a_run_the_cloud_refuses_is_rejected_and_not_retried(
    broker: Broker, cloud_db: str, ingest: object, tmp_path: Path
) -> None:
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    acc, other = broker.devices[0], broker.devices[1]
    store = open_store(tmp_path / "edge.db")
    good = new_run(template_message(acc.site, acc.device), "S-1")
    # A run that claims to come from another device than the topic it is sent on.
    forged = new_run(template_message(other.site, other.device), "S-2")
    queue_runs(store, [forged, good])
    worker = SyncWorker(
        sync_settings(broker.port, acc),
        outbox=Outbox(store),
        site_id=acc.site,
        device_id=acc.device,
    )
    worker.start()
    try:
        wait_for(lambda: outbox.backlog(store)[0] == 0, 30, "an empty outbox")
    finally:
        worker.stop()
    assert outbox.rejected_count(store) == 1
    reason = (
        store.read()
        .execute("SELECT rejected_reason FROM outbox WHERE rejected_reason IS NOT NULL")
        .fetchone()[0]
    )
    assert "another device" in reason
    assert scalar(cloud_db, "SELECT count(*) FROM runs") == 1
    assert (
        scalar(
            cloud_db, "SELECT count(*) FROM ingest_dead_letters WHERE run_id = :r", r=forged.run_id
        )
        == 1
    )
    store.close()


def test_status_is_recorded_and_the_will_marks_offline(
    broker: Broker, cloud_db: str, ingest: object, tmp_path: Path
) -> None:
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    acc = broker.devices[2]
    store = open_store(tmp_path / "edge.db")
    worker = SyncWorker(
        sync_settings(broker.port, acc),
        outbox=Outbox(store),
        site_id=acc.site,
        device_id=acc.device,
        status_info=lambda: {"model": "hi-yolo 1", "backend": "onnx"},
    )
    worker.start()
    q = "SELECT last_status->>'online' FROM devices WHERE mqtt_username = :u"
    try:
        wait_for(lambda: scalar(cloud_db, q, u=acc.username) == "true", 20, "online status")
        assert (
            scalar(
                cloud_db,
                "SELECT last_status->>'backend' FROM devices WHERE mqtt_username = :u",
                u=acc.username,
            )
            == "onnx"
        )
    finally:
        worker.stop()
    wait_for(lambda: scalar(cloud_db, q, u=acc.username) == "false", 20, "offline status")
    store.close()

"""Ingest workers sharing the subscription: one that stops cleanly leaves no share behind.

Mosquitto goes on giving a shared subscription's messages to an offline persistent session
(and holds them for it until it returns or expires). A worker that is stopped on purpose must
therefore end its session, or a third of the traffic would wait for a worker that is gone.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from core.wire import encode_message
from tests.sync.conftest import Broker
from tests.sync.mqttc import publish_many
from tests.sync.world import new_run, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]


def _worker(broker: Broker, cloud_db: str, client_id: str):  # type: ignore[no-untyped-def]
    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.settings import CloudSettings

    settings = CloudSettings(
        database_url=cloud_db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    worker = IngestWorker(settings, IngestOptions(client_id=client_id, batch_wait_s=0.02))
    worker.start()
    assert worker.wait_connected(10)
    return worker


def _runs(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM runs")).scalar_one())
    finally:
        engine.dispose()


def test_a_cleanly_stopped_worker_leaves_no_messages_stranded(
    broker: Broker, cloud_db: str
) -> None:
    stays = _worker(broker, cloud_db, "ingest-stays")
    leaves = _worker(broker, cloud_db, "ingest-leaves")
    acc = broker.devices[0]
    topic = f"microplate/v1/{acc.site}/{acc.device}/runs"
    template = template_message(acc.site, acc.device)
    try:
        time.sleep(0.5)  # both subscriptions in place
        publish_many(
            broker.port,
            acc.username,
            acc.password,
            topic,
            [encode_message(new_run(template, "S-A", seq=i)) for i in range(40)],
        )
        deadline = time.monotonic() + 20
        while _runs(cloud_db) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _runs(cloud_db) == 40
        assert leaves.stats.runs_written > 0  # it did take a share while it was there

        leaves.stop()
        leaves.engine.dispose()
        before = stays.stats.received
        publish_many(
            broker.port,
            acc.username,
            acc.password,
            topic,
            [encode_message(new_run(template, "S-B", seq=100 + i)) for i in range(60)],
        )
        deadline = time.monotonic() + 10  # far below the appliances' resend timeout
        while _runs(cloud_db) < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _runs(cloud_db) == 100, "messages went to the stopped worker's session"
        assert stays.stats.received - before == 60
    finally:
        stays.stop()
        stays.engine.dispose()

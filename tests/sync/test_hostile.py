"""10,000 malformed, oversized or hostile payloads: the ingest survives and dead-letters each.

The payloads go through the real broker (on the device's own topic, so the ACL lets them
pass) into the ingest worker and Postgres. Afterwards every payload is in the dead-letter
table (matched by SHA-256) with a reason, nothing reached the results tables, and the worker
still ingests a good run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.sync.conftest import Broker, ingest_worker
from tests.sync.hostile import corpus
from tests.sync.mqttc import MqttProbe, publish_many
from tests.sync.world import new_run, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.slow]

N = 10_000


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[object]:
    with ingest_worker(broker, cloud_db, "ingest-hostile") as worker:
        yield worker


def test_hostile_payloads_are_dead_lettered_and_the_worker_survives(
    broker: Broker, cloud_db: str, ingest: object
) -> None:
    acc = broker.devices[0]
    template = template_message(acc.site, acc.device)
    payloads = corpus(template, N)
    runs_topic = f"microplate/v1/{acc.site}/{acc.device}/runs"
    status_topic = f"microplate/v1/{acc.site}/{acc.device}/status"
    # Most on `runs`; a slice on `status`, where a run message does not belong either.
    on_status = payloads[:200]
    probe = MqttProbe(broker.port, acc.username, acc.password, client_id="probe")
    probe.connect()
    probe.subscribe(f"microplate/v1/{acc.site}/{acc.device}/acks")
    publish_many(broker.port, acc.username, acc.password, runs_topic, payloads[200:])
    publish_many(broker.port, acc.username, acc.password, status_topic, on_status)

    engine = create_engine(cloud_db)
    try:
        deadline = time.monotonic() + 150
        count = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                count = conn.execute(text("SELECT count(*) FROM ingest_dead_letters")).scalar()
            if count is not None and count >= N:
                break
            time.sleep(1)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT payload_sha256, reason, payload_bytes FROM ingest_dead_letters")
            ).all()
            assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
        want = {hashlib.sha256(p).hexdigest() for p in payloads}
        got = {r[0] for r in rows}
        missing = want - got
        assert not missing, f"{len(missing)} payloads were not dead-lettered"
        assert all(r[1] and len(r[1]) >= 5 for r in rows)
        sizes = {hashlib.sha256(p).hexdigest(): len(p) for p in payloads}
        assert all(r[2] == sizes[r[0]] for r in rows if r[0] in sizes)

        # Still alive: a good run goes through and is acked.
        good = new_run(template, "S-OK")
        from core.wire import Ack, encode_message, parse_message

        probe.publish(runs_topic, encode_message(good))
        acks: list[Ack] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(a.run_id == good.run_id for a in acks):
            for _, payload in probe.drain(0.5):
                msg = parse_message(payload)
                assert isinstance(msg, Ack)
                acks.append(msg)
        mine = [a for a in acks if a.run_id == good.run_id]
        assert mine and mine[0].status == "accepted"
        assert any(a.status == "rejected" and a.reason for a in acks)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1
    finally:
        probe.close()
        engine.dispose()

"""One poison message never stalls the ingest (issue 17, point 1).

Real broker, real Postgres, the real worker. A run whose `counted_titre` was `1e200` once
passed validation and overflowed the statistics inside the ingest; the batch was retried
forever and no other device's run got through, even after a restart. Now the wire refuses it,
and whatever a message raises in the writer, only that message is dead-lettered (and acked)
while the others are written. QoS 0 publishes are processed without a PUBACK (answering id 0
made the broker drop the worker's connection, over and over).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.sync.conftest import Broker, ingest_worker
from tests.sync.mqttc import MqttProbe
from tests.sync.world import new_run, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[Any]:
    with ingest_worker(broker, cloud_db, "ingest-poison", batch_wait_s=0.3) as worker:
        yield worker


@pytest.fixture
def engine(cloud_db: str) -> Iterator[Engine]:
    eng = create_engine(cloud_db)
    yield eng
    eng.dispose()


def _wait_for(engine: Engine, sql: str, params: dict[str, Any], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            value = conn.execute(text(sql), params).scalar()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _device(broker: Broker, i: int) -> tuple[MqttProbe, str, Any]:
    acc = broker.devices[i]
    probe = MqttProbe(broker.port, acc.username, acc.password, client_id=f"poison-{i}")
    probe.connect()
    return (
        probe,
        f"microplate/v1/{acc.site}/{acc.device}/runs",
        template_message(acc.site, acc.device),
    )


RUN_STORED = "SELECT count(*) FROM runs WHERE run_id = :id"
DEAD = "SELECT reason FROM ingest_dead_letters WHERE run_id = :id"


def test_a_poison_titre_is_dead_lettered_and_the_next_device_gets_through(
    broker: Broker, engine: Engine, ingest: Any
) -> None:
    a, a_topic, a_tpl = _device(broker, 0)
    b, b_topic, b_tpl = _device(broker, 1)
    try:
        poison = json.loads(new_run(a_tpl, "S-POISON").model_dump_json())
        poison["rows"][0]["counted_titre"] = 1e200
        a.publish(a_topic, json.dumps(poison).encode())
        good = new_run(b_tpl, "S-GOOD")
        b.publish(b_topic, good.model_dump_json().encode())
        assert _wait_for(engine, RUN_STORED, {"id": good.run_id}, 15) == 1
        reason = _wait_for(engine, DEAD, {"id": poison["run_id"]}, 15)
        assert reason and reason.startswith("rows.0.counted_titre"), reason
    finally:
        a.close()
        b.close()


def test_a_message_that_raises_in_the_writer_is_isolated(
    broker: Broker, engine: Engine, ingest: Any
) -> None:
    """Poison already in the database (a stored row the statistics overflow on): the next run
    of that sample raises while pooling. Only that run is dead-lettered (kept whole), the
    other device's runs in the same batches are written, and the worker keeps going."""
    a, a_topic, a_tpl = _device(broker, 0)
    b, b_topic, b_tpl = _device(broker, 1)
    try:
        first = new_run(a_tpl, "S-LEGACY")
        a.publish(a_topic, first.model_dump_json().encode())
        assert _wait_for(engine, RUN_STORED, {"id": first.run_id}, 15) == 1
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE run_rows SET counted_titre = 1e200 WHERE run_id = :id AND row = 0"),
                {"id": first.run_id},
            )
        again = new_run(a_tpl, "S-LEGACY", seq=1)
        payload = again.model_dump_json().encode()
        others = [new_run(b_tpl, f"S-B{i}", seq=i) for i in range(5)]
        a.publish(a_topic, payload)
        for msg in others:
            b.publish(b_topic, msg.model_dump_json().encode())
        for msg in others:
            assert _wait_for(engine, RUN_STORED, {"id": msg.run_id}, 15) == 1, "stalled"
        reason = _wait_for(engine, DEAD, {"id": again.run_id}, 15)
        assert reason == "could not be processed: OverflowError"
        with engine.connect() as conn:
            kept = conn.execute(
                text("SELECT payload FROM ingest_dead_letters WHERE run_id = :id"),
                {"id": again.run_id},
            ).scalar()
            assert conn.execute(text(RUN_STORED), {"id": again.run_id}).scalar() == 0
        assert bytes(kept) == payload
        # Acked, so not redelivered: exactly one dead letter, and the worker is not retrying.
        time.sleep(1.5)
        with engine.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FROM ingest_dead_letters WHERE run_id = :id"),
                {"id": again.run_id},
            ).scalar()
        assert n == 1
        assert ingest.stats.db_retries == 0
    finally:
        a.close()
        b.close()


def test_qos0_publishes_do_not_break_the_ingests_connection(
    broker: Broker, engine: Engine, ingest: Any
) -> None:
    a, a_topic, a_tpl = _device(broker, 0)
    try:
        runs = [new_run(a_tpl, f"S-Q0-{i}", seq=i) for i in range(3)]
        for msg in runs:
            a.client.publish(a_topic, msg.model_dump_json().encode(), qos=0)
        for msg in runs:
            assert _wait_for(engine, RUN_STORED, {"id": msg.run_id}, 15) == 1
        generation = ingest._generation
        follow = new_run(a_tpl, "S-Q1")
        a.publish(a_topic, follow.model_dump_json().encode())
        assert _wait_for(engine, RUN_STORED, {"id": follow.run_id}, 15) == 1
        time.sleep(1.0)
        # Still on the first connection: no protocol error made the broker drop it.
        assert ingest._generation == generation == 1
        assert ingest.wait_connected(0.1)
    finally:
        a.close()


def test_only_a_lost_database_holds_a_batch() -> None:
    """What the worker holds (retries) versus what it blames on a message (bisects)."""
    import psycopg
    from sqlalchemy import exc as sa

    from cloud.ingest.worker import _outage

    away = [
        sa.OperationalError("x", None, psycopg.OperationalError("server closed")),
        sa.InterfaceError("x", None, psycopg.InterfaceError("connection closed")),
        sa.DBAPIError("COPY", None, psycopg.InterfaceError("connection closed")),
        sa.DBAPIError("x", None, psycopg.Error("gone"), connection_invalidated=True),
        sa.TimeoutError("pool"),
    ]
    blamed = [
        sa.DataError("x", None, psycopg.DataError("NUL")),
        sa.IntegrityError("x", None, psycopg.IntegrityError("dup")),
        sa.DBAPIError("COPY", None, psycopg.errors.NumericValueOutOfRange("big")),
        sa.OperationalError("x", None, psycopg.errors.ProgramLimitExceeded("index row size")),
        OverflowError("math range error"),
        ValueError("bad"),
    ]
    assert all(_outage(e) for e in away)
    assert not any(_outage(e) for e in blamed)

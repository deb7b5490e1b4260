"""A replicated Postgres under the cloud: streaming standby, failover, nothing lost.

Private servers only (the shared Postgres is never touched): a primary made with initdb and
pg_ctl on a free port, a standby cloned from it with `pg_basebackup -R` (streaming, and
synchronous: the primary's `synchronous_standby_names` names it, so a commit returns only
once the standby has the WAL on disk), a private Mosquitto and the real ingest worker.

1. The cloud's migrations run on the primary, and the ingest writes runs through it; every
   run is then readable on the standby.
2. The primary dies (`pg_ctl stop -m immediate`, a crash) while the ingest is busy; runs
   keep arriving from the devices. The standby is promoted.
3. The ingest was configured with both servers in one connection string (libpq multi-host,
   `target_session_attrs=read-write`), so the same worker, not restarted, finds the new
   primary and writes the held and new runs there: every run sent is stored once, none lost.

docs/scale-out.md, "Replicated Postgres", describes the same steps for production.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.wire import encode_message
from tests.sync.conftest import Broker
from tests.sync.harness import PgCluster, pg_bin, world_dir
from tests.sync.mqttc import publish_many
from tests.sync.world import new_run, register_devices, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]

DB = "cloud"


class Standby(PgCluster):
    """A cluster whose data directory is a base backup of `primary`, streaming from it."""

    def clone(self, primary: PgCluster) -> None:
        self.sock.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(
            pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U",
            "postgres", "-D", str(self.data), "-R", "-X", "stream", "--no-sync",
            "-d", "application_name=standby1",
        )  # fmt: skip

    def promote(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-w", "promote")


def _count(port: int, sql: str = "SELECT count(*) FROM runs") -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/{DB}", connect_timeout=3) as c:
        row = c.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _wait(what: str, check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except psycopg.OperationalError as exc:
            last = exc
        if last is True:
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {seconds:.0f} s (last: {last!r})")


@pytest.fixture
def servers() -> Iterator[tuple[PgCluster, Standby]]:
    primary = PgCluster(world_dir("mp-replica-primary-"))
    standby = Standby(world_dir("mp-replica-standby-"))
    try:
        primary.init()
        primary.start()
        primary.create_database(DB)
        standby.clone(primary)
        standby.start()
        # Synchronous streaming to the standby: a commit (and so the ingest's PUBACK and the
        # device's ack) returns only once the standby has flushed the WAL. Set once the
        # standby is there: before, every commit would wait for it.
        with psycopg.connect(primary.admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
            conn.execute("SELECT pg_reload_conf()")
        yield primary, standby
    finally:
        for cluster in (standby, primary):
            cluster.stop("immediate")
            shutil.rmtree(cluster.root, ignore_errors=True)


def _payloads(broker: Broker, index: int, tag: str, n: int) -> tuple[str, list[bytes]]:
    acc = broker.devices[index]
    template = template_message(acc.site, acc.device)
    topic = f"microplate/v1/{acc.site}/{acc.device}/runs"
    return topic, [encode_message(new_run(template, f"{tag}-{i:04d}", seq=i)) for i in range(n)]


def test_failover_to_a_promoted_standby_loses_no_run(
    broker: Broker, servers: tuple[PgCluster, Standby]
) -> None:
    from cloud.db import migrate
    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.settings import CloudSettings

    primary, standby = servers
    migrate(primary.url(DB))
    register_devices(primary.url(DB), broker.devices)
    # The standby is a hot standby: readable, and refuses writes.
    _wait("schema and devices on the standby", lambda: _count(standby.port, "SELECT count(*) "
          "FROM devices") == len(broker.devices), 30)  # fmt: skip
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        _count(standby.port, "INSERT INTO sites (id, slug, name) VALUES "
               "(gen_random_uuid(), 'x', 'x') RETURNING 1")  # fmt: skip

    both = (
        f"postgresql+psycopg://postgres@/{DB}?host=127.0.0.1:{primary.port}"
        f"&host=127.0.0.1:{standby.port}&target_session_attrs=read-write&connect_timeout=3"
    )
    settings = CloudSettings(
        database_url=both,
        mqtt_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    worker = IngestWorker(
        settings, IngestOptions(client_id="ingest-replica", batch_wait_s=0.2, retry_max_s=1.0)
    )
    worker.start()
    try:
        assert worker.wait_connected(10)
        acc0 = broker.devices[0]
        topic, before = _payloads(broker, 0, "before", 150)
        publish_many(broker.port, acc0.username, acc0.password, topic, before)
        _wait("150 runs on the primary", lambda: _count(primary.port) == 150, 60)
        # Synchronous replication: committed on the primary means on the standby's disk;
        # replay (visibility) follows within moments.
        _wait("150 runs on the standby", lambda: _count(standby.port) == 150, 10)
        with psycopg.connect(primary.admin_url) as conn:
            states = conn.execute("SELECT application_name, sync_state FROM pg_stat_replication")
            assert states.fetchall() == [("standby1", "sync")]

        # The primary crashes with the ingest busy: these arrive while it is gone.
        acc1 = broker.devices[1]
        topic1, during = _payloads(broker, 1, "during", 150)
        primary.stop("immediate")
        publish_many(broker.port, acc1.username, acc1.password, topic1, during)
        time.sleep(1.0)  # the worker holds the batch (database away), the broker the rest
        assert worker.stats.db_retries > 0, "the worker never saw the database go away"
        standby.promote()

        topic, after = _payloads(broker, 0, "after", 100)
        publish_many(broker.port, acc0.username, acc0.password, topic, after)
        _wait("every run on the promoted standby", lambda: _count(standby.port) == 400, 90)
        assert _count(standby.port, "SELECT count(DISTINCT run_id) FROM runs") == 400
        assert _count(standby.port, "SELECT count(*) FROM ingest_dead_letters") == 0
        assert _count(standby.port, "SELECT count(*) FROM samples") == 400
        # The same worker, never restarted, did all of it; the old primary stays down.
        assert worker.connected
        assert not Path(primary.data / "postmaster.pid").exists()
    finally:
        worker.stop()
        worker.engine.dispose()

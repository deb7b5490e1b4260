"""Fixtures for the sync tests: a private broker (auth + ACL) and a migrated cloud database.

The broker is private (free port, persistence in a temp dir) because tests kill and restart
it; the database is a uniquely named one on the shared Postgres (the chaos test starts its
own cluster instead, since it restarts Postgres).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.sync.harness import Mosquitto, world_dir
from tests.sync.world import INGEST_USER, DeviceAccount, accounts, acl_text, register_devices

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Broker:
    server: Mosquitto
    devices: list[DeviceAccount]
    ingest_password: str

    @property
    def port(self) -> int:
        return self.server.port


def make_broker(devices: list[DeviceAccount]) -> Broker:
    ingest_password = secrets.token_urlsafe(12)
    creds = {a.username: a.password for a in devices}
    creds[INGEST_USER] = ingest_password
    server = Mosquitto(world_dir("mp-sync-mqtt-"), accounts=creds, acl=acl_text(devices))
    server.start()
    return Broker(server, devices, ingest_password)


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = make_broker(accounts(2, 2))
    try:
        yield b
    finally:
        b.server.kill()
        shutil.rmtree(b.server.workdir, ignore_errors=True)


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture
def cloud_db(broker: Broker) -> Iterator[str]:
    """A migrated database on the shared Postgres with the broker's devices registered."""
    with cloud_database(broker.devices) as url:
        yield url


@contextlib.contextmanager
def cloud_database(devices: list[DeviceAccount]) -> Iterator[str]:
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    from cloud.db import migrate

    name = f"mp_sync_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        migrate(url)
        register_devices(url, devices)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def ingest_worker(
    broker: Broker, cloud_db: str, client_id: str, batch_wait_s: float | None = None
) -> Iterator[Any]:
    """A connected cloud ingest worker on the test's broker and database, stopped on leaving
    (``batch_wait_s``: None keeps the worker's default)."""
    from cloud.settings import CloudSettings

    settings = CloudSettings(
        database_url=cloud_db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{broker.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    with running_ingest(settings, client_id, batch_wait_s) as worker:
        yield worker


@contextlib.contextmanager
def running_ingest(
    settings: Any, client_id: str, batch_wait_s: float | None = None
) -> Iterator[Any]:
    """A connected cloud ingest worker with these cloud settings, stopped on leaving."""
    from cloud.ingest import IngestOptions, IngestWorker

    wait = {} if batch_wait_s is None else {"batch_wait_s": batch_wait_s}
    worker = IngestWorker(settings, IngestOptions(client_id=client_id, **wait))
    worker.start()
    try:
        assert worker.wait_connected(10)
        yield worker
    finally:
        worker.stop()
        worker.engine.dispose()

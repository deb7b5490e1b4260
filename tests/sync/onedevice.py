"""The real cloud with one provisioned appliance, for the sync tests that drive a real appliance:
the cloud's HTTP API under uvicorn on a migrated database and SeaweedFS, and a private Mosquitto
holding only the ingest account and that device's, with the cloud's generated ACL (optionally
the cloud's ingest worker too)."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.crud import devices, sites
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.mqtt_auth import BrokerAccount, render_acl_file
from tests.cloud.conftest import S3Server, make_settings
from tests.cloud.world import World, build_world, open_client
from tests.sync.conftest import running_ingest
from tests.sync.harness import Mosquitto, free_port, serve_asgi, world_dir

INGEST = "microplate-ingest"


@dataclass
class OneDeviceCloud:
    world: World
    settings: Any
    s3: S3Server
    api: str  # the cloud's HTTP API (uvicorn), as the appliance reaches it
    broker: Mosquitto
    device: str  # the provisioned device's slug (in the world's site A)
    password: str  # its broker password
    token: str  # its API token


@contextlib.contextmanager
def one_device_cloud(
    database_url: str,
    s3_server: S3Server,
    workdir: Path,
    device: str,
    *,
    ingest_client_id: str | None = None,
) -> Iterator[OneDeviceCloud]:
    """Everything is stopped on leaving; ``ingest_client_id`` also runs an ingest worker."""
    from cloud.app import create_app

    mqtt_port = free_port()
    ingest_password = "ingest-" + uuid.uuid4().hex
    settings = make_settings(
        database_url,
        workdir,
        s3_server,
        mqtt_broker_url=f"mqtt://127.0.0.1:{mqtt_port}",
        mqtt_ingest_password=ingest_password,
    )
    with open_client(settings) as client:
        world = build_world(settings, client)
        engine = make_engine(settings)
        try:
            with session_scope(make_sessionmaker(engine)) as session:
                site = sites.get_site_by_slug(session, slug=world.slug_a)
                assert site is not None
                enrolled = devices.provision_device(session, site=site, slug=device)
        finally:
            engine.dispose()
        username = f"{world.slug_a}.{device}"
        broker = Mosquitto(
            world_dir(f"mp-{device}-"),
            accounts={INGEST: ingest_password, username: enrolled.mqtt_password},
            acl=render_acl_file(
                [BrokerAccount(username, "", world.slug_a, device)], ingest_username=INGEST
            ),
            port=mqtt_port,
        )
        broker.start()
        try:
            with contextlib.ExitStack() as running:
                if ingest_client_id is not None:
                    running.enter_context(running_ingest(settings, ingest_client_id, 0.02))
                api = running.enter_context(serve_asgi(create_app(settings, listen=False)))
                yield OneDeviceCloud(
                    world,
                    settings,
                    s3_server,
                    api,
                    broker,
                    device,
                    enrolled.mqtt_password,
                    enrolled.api_token,
                )
        finally:
            broker.kill()
            shutil.rmtree(broker.workdir, ignore_errors=True)

"""The stack for the whole-path tests: module scope, torn down in reverse order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.settings import CloudSettings
from tests.cloud.conftest import (  # noqa: F401  (s3_server is a fixture)
    S3Server,
    free_port,
    make_settings,
    private_database,
    s3_server,
)
from tests.e2e.path.stack import ADMIN_EMAIL, ADMIN_PASSWORD, Broker, CloudApi, cloud_cli


@dataclass
class Stack:
    settings: CloudSettings
    api: CloudApi
    broker: Broker
    tmp: Path


@pytest.fixture(scope="module")
def stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    from cloud.db import migrate
    from cloud.ingest import IngestOptions, IngestWorker

    tmp = tmp_path_factory.mktemp("path")
    tmp.chmod(0o755)  # mosquitto reads its files from here
    api_port, mqtt_port = free_port(), free_port()
    with private_database("mp_path") as url:
        settings = make_settings(
            url,
            tmp,
            s3_server,
            api_base_url=f"http://127.0.0.1:{api_port}",
            mqtt_broker_url=f"mqtt://127.0.0.1:{mqtt_port}",
            mosquitto_pid_file=tmp / "mosquitto.pid",
        )
        migrate(url)
        (tmp / "admin.pw").write_text(ADMIN_PASSWORD, encoding="utf-8")
        pw_file = str(tmp / "admin.pw")
        made = cloud_cli(
            settings, "create-admin", "--email", ADMIN_EMAIL, "--password-file", pw_file
        )
        assert made.returncode == 0, made.stderr
        # The broker files exist before the broker starts (the ingest account only, so far).
        from cloud.crud.devices import sync_broker_files
        from cloud.db import make_engine, make_sessionmaker

        engine = make_engine(settings)
        with make_sessionmaker(engine)() as session:
            sync_broker_files(session, settings)
        engine.dispose()
        broker = Broker(settings, tmp, mqtt_port)
        broker.start()
        api = CloudApi(settings, api_port)
        api.start()
        ingest = IngestWorker(settings, IngestOptions(client_id="ingest-path", batch_wait_s=0.02))
        ingest.start()
        try:
            assert ingest.wait_connected(10)
            yield Stack(settings, api, broker, tmp)
        finally:
            ingest.stop()
            ingest.engine.dispose()
            api.stop()
            broker.stop()

"""The ingest's bulk path tells live dashboards about each new run (`cloud.broadcast`), with
the payloads sent as binary parameters (JSON with quotes and non-ASCII sample numbers intact)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import psycopg
import pytest

from cloud.broadcast import CHANNEL
from core.wire import encode_message
from tests.sync.conftest import cloud_database
from tests.sync.world import accounts, new_run, template_message

pytestmark = pytest.mark.postgres


def test_each_new_run_is_announced_once() -> None:
    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.ingest.validate import Incoming
    from cloud.settings import CloudSettings

    devices = accounts(1, 1)
    acc = devices[0]
    with cloud_database(devices) as url:
        template = template_message(acc.site, acc.device)
        runs = [new_run(template, number) for number in ('S-"1"', "S-Ü-2", "S-3")]
        items = [
            Incoming(
                topic=f"microplate/v1/{acc.site}/{acc.device}/runs",
                payload=encode_message(r),
                received_at=datetime.now(timezone.utc),
                mid=i + 1,
            )
            for i, r in enumerate(runs)
        ]
        settings = CloudSettings(
            database_url=url, mqtt_broker_url="mqtt://127.0.0.1:1", mqtt_ingest_password="x"
        )
        worker = IngestWorker(settings, IngestOptions(share_group="g"))
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as listener:
            listener.execute(f"LISTEN {CHANNEL}")
            try:
                worker.process(items)
            finally:
                worker.engine.dispose()
            got = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=3)]
        assert worker.stats.runs_written == 3
        assert sorted(g["run_id"] for g in got) == sorted(str(r.run_id) for r in runs)
        assert sorted(g["sample_number"] for g in got) == sorted(r.sample_number for r in runs)
        assert {g["type"] for g in got} == {"run"}

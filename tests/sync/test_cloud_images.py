"""What the cloud lists for a run exists in object storage, and the annotated image is readable
(issue 16 point 6).

A real appliance (fake detector) uploads its images through the real cloud API (device token,
presigned PUTs to SeaweedFS) and publishes through Mosquitto to the real ingest: the run in
Postgres names exactly the images uploaded (never the raw one), each of them is in the
bucket, and the annotated image is as wide as the frame allows (not the model's reduction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from tests.cloud.conftest import S3Server, make_settings, s3_server  # noqa: F401 (fixture)
from tests.edge.plates import PLATE_A, WIDTH, fake_detector, jpeg, plate_image
from tests.sync.conftest import Broker, ingest_worker
from tests.sync.harness import serve_asgi
from tests.sync.test_uploader import s3_object
from tests.sync.world import sync_settings

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(180)]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cloud_api(cloud_db: str, s3_server: S3Server, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    from cloud.app import create_app

    settings = make_settings(cloud_db, tmp_path / "cloud", s3_server)
    with serve_asgi(create_app(settings, listen=False)) as url:
        yield url


@pytest.fixture
def ingest(broker: Broker, cloud_db: str) -> Iterator[object]:
    with ingest_worker(broker, cloud_db, "ingest-images", batch_wait_s=0.02) as worker:
        yield worker


def device_token(url: str, site: str, device: str) -> str:
    """Give the broker's device an API token, as provisioning would."""
    from cloud.security import digest_token, new_device_token

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            device_id = conn.execute(
                text(
                    "SELECT d.id FROM devices d JOIN sites s ON s.id = d.site_id "
                    "WHERE s.slug = :s AND d.slug = :d"
                ),
                {"s": site, "d": device},
            ).scalar_one()
            token = new_device_token(device_id)
            conn.execute(
                text("UPDATE devices SET api_token_digest = :t WHERE id = :id"),
                {"t": digest_token(token), "id": device_id},
            )
        return token
    finally:
        engine.dispose()


def test_the_cloud_names_only_images_it_holds(
    broker: Broker,
    cloud_db: str,
    cloud_api: str,
    ingest: object,
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge.app import Appliance
    from edge.config import EdgeSettings
    from edge.db import outbox
    from edge.schemas import RunRequest

    for key in list(__import__("os").environ):
        if key.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(key)
    acc = broker.devices[0]
    sync = sync_settings(
        broker.port,
        acc,
        api_base_url=cloud_api,
        device_token=device_token(cloud_db, acc.site, acc.device),
    )
    app = Appliance(
        EdgeSettings(
            data_dir=tmp_path / "data",
            share_dir=tmp_path / "share",
            detector=fake_detector(PLATE_A),
            retention={"disk_floor_mb": 1},
            site_id=acc.site,
            device_id=acc.device,
            sync=sync.model_dump(),
        )
    )
    app.start()
    try:
        ticket = app.intake.submit_image(
            jpeg(plate_image(PLATE_A)), "p.jpg", RunRequest(sample_number="S1")
        )
        state = app.intake.wait(ticket.id, 30)
        assert state.state == "done" and state.run_id, state
        wait_for(lambda: outbox.backlog(app.store)[0] == 0, 60, "an empty outbox")
    finally:
        app.stop()
    engine = create_engine(cloud_db)
    try:
        with engine.connect() as conn:
            keys = conn.execute(
                text("SELECT image_keys FROM runs WHERE run_id = :r"), {"r": state.run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert set(keys) == {"annotated", "thumbnail"}  # uploaded; the raw image never is
    for key in keys.values():
        assert s3_object(s3_server, key)[:2] == b"\xff\xd8"
    annotated = s3_object(s3_server, keys["annotated"])
    image = cv2.imdecode(np.frombuffer(annotated, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[1] == min(WIDTH, 1280)

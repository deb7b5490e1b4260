"""The site switch "allow corrected plates for training" drives raw uploads end to end.

The real cloud (Postgres, SeaweedFS, its HTTP API under uvicorn, the ingest worker), a private
Mosquitto with the cloud's generated ACL and a real appliance (fake detector) whose local
`sync.upload_images` names raw. Before the site opts in, the cloud refuses the raw presign
and the other images still go. An admin switches the site on: the cloud publishes a
retained DesiredConfig with `upload_raw` on the device's `config` topic, the appliance applies
it, and its next plate's raw photo is in the bucket. Switched off again: the next plate uploads
no raw photo. A device enrolled while the site is opted in is sent the config at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.cloud.conftest import S3Server, migrated_db, s3_server  # noqa: F401
from tests.edge.plates import PLATE_A, fake_detector, jpeg, plate_image
from tests.sync.onedevice import OneDeviceCloud, one_device_cloud
from tests.sync.test_uploader import s3_object

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(180)]

DEVICE = "raw-1"


Cloud = OneDeviceCloud


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cloud(
    migrated_db: str,  # noqa: F811
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Cloud]:
    with one_device_cloud(
        migrated_db, s3_server, tmp_path / "cloud", DEVICE, ingest_client_id="ingest-raw"
    ) as cloud:
        yield cloud


def switch(cloud: Cloud, on: bool) -> None:
    resp = cloud.world.client.patch(
        f"/api/v1/sites/{cloud.world.site_a}",
        json={"allow_training": on},
        headers=cloud.world.actors["admin"].headers,
    )
    assert resp.status_code == 200 and resp.json()["allow_training"] is on


def applied(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / "sync-config.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def image_keys(cloud: Cloud, run_id: str) -> dict[str, str] | None:
    engine = create_engine(cloud.settings.database_url)
    try:
        with engine.connect() as conn:
            keys = conn.execute(
                text("SELECT image_keys FROM runs WHERE run_id = :r"), {"r": run_id}
            ).scalar_one_or_none()
    finally:
        engine.dispose()
    return dict(keys) if keys is not None else None


def sent_revision(cloud: Cloud, slug: str) -> int:
    engine = create_engine(cloud.settings.database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT d.config_sent_revision FROM devices d "
                        "JOIN sites s ON s.id = d.site_id WHERE s.slug = :s AND d.slug = :d"
                    ),
                    {"s": cloud.world.slug_a, "d": slug},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def read_plate(app: Any, cloud: Cloud, seed: int) -> dict[str, str]:
    from edge.schemas import RunRequest

    ticket = app.intake.submit_image(
        jpeg(plate_image(PLATE_A, seed=seed)), "p.jpg", RunRequest(sample_number=f"S-{seed}")
    )
    state = app.intake.wait(ticket.id, 30)
    assert state.state == "done" and state.run_id, state
    run_id = state.run_id
    wait_for(lambda: image_keys(cloud, run_id) is not None, f"run {run_id} in the cloud")
    keys = image_keys(cloud, run_id)
    assert keys is not None
    return keys


def test_the_site_switch_drives_raw_uploads(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.app import Appliance
    from edge.config import EdgeSettings

    for name in list(__import__("os").environ):
        if name.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "edge"
    settings = EdgeSettings(
        data_dir=data_dir,
        share_dir=tmp_path / "share",
        site_id=cloud.world.slug_a,
        device_id=DEVICE,
        detector=fake_detector(PLATE_A),
        retention={"disk_floor_mb": 1},
        sync={
            "broker_url": f"mqtt://127.0.0.1:{cloud.broker.port}",
            "username": f"{cloud.world.slug_a}.{DEVICE}",
            "password": cloud.password,
            "api_base_url": cloud.api,
            "device_token": cloud.token,
            # Raw named locally: the cloud's presign refusal keeps it out until the site opts
            # in, and the cloud's upload_raw=false takes it out again.
            "upload_images": ["annotated", "thumbnail", "raw"],
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "poll_s": 0.1,
        },
    )
    app = Appliance(settings)
    app.start()
    try:
        assert app.sync is not None and app.sync.link.wait_connected(10)
        # Off by default: the raw presign is refused, the other images still go, and the
        # device is not taken for a revoked one.
        assert set(read_plate(app, cloud, 1)) == {"annotated", "thumbnail"}
        assert app.sync.uploader is not None and not app.sync.uploader.refused

        switch(cloud, True)
        wait_for(lambda: applied(data_dir).get("revision") == 1, "revision 1 applied")
        state = applied(data_dir)
        assert state["upload_raw"] is True and state["applied"] == ["upload_raw"]
        assert sent_revision(cloud, DEVICE) == 1
        snap = app.sync.snapshot()  # what the appliance's status page shows
        assert snap["config_revision"] == 1 and snap["upload_raw"] is True
        keys = read_plate(app, cloud, 2)
        assert set(keys) == {"annotated", "thumbnail", "raw"}
        assert s3_object(cloud.s3, keys["raw"])[:2] == b"\xff\xd8"  # the photo, in the bucket

        # A device enrolled while the site is opted in is sent the config straight away.
        resp = cloud.world.client.post(
            "/api/v1/devices",
            json={"site_id": str(cloud.world.site_a), "slug": "raw-2"},
            headers=cloud.world.actors["admin"].headers,
        )
        assert resp.status_code == 201, resp.text
        wait_for(lambda: sent_revision(cloud, "raw-2") == 1, "raw-2's config acknowledged")

        switch(cloud, False)
        wait_for(lambda: applied(data_dir).get("revision") == 2, "revision 2 applied")
        assert applied(data_dir)["upload_raw"] is False
        assert app.sync.snapshot()["upload_raw"] is False
        assert set(read_plate(app, cloud, 3)) == {"annotated", "thumbnail"}
        assert not app.sync.uploader.refused
    finally:
        app.stop()
    # The choice survives a restart of the appliance (kept beside its database).
    assert applied(data_dir)["upload_raw"] is False

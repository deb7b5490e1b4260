"""A signed model reaches a real appliance: the real cloud (Postgres, SeaweedFS, its HTTP API
served by uvicorn), a private Mosquitto with the cloud's generated ACL, and the appliance with
sync configured and the public key Ansible would install.

One canary appliance, four releases published with `microplate-cloud models publish`:
- 3.2.0, a copy of the shipped hi-wells weights: notified over MQTT, downloaded by presigned
  URL from SeaweedFS, verified, shadowed on 3 plates, switched; the cloud's rollout says
  `switched` and the assignment is `done`;
- 3.3.0, the same weights with the output classes rotated (disagrees on every well): shadowed,
  rolled back; the cloud halts the rollout; 3.2.0 keeps reading;
- 3.4.0, with one file changed in object storage after publishing: refused as `tampered`;
- 3.1.0, signed and intact but older than the 3.2.0 in force: refused as a `downgrade`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from cloud.cli import build_parser
from cloud.ota_cli import run_models
from core.calibration import CalibrationGrid
from core.ota import load_private_key, public_key_text
from core.plate import PLATE_96
from tests.cloud.conftest import S3Server, migrated_db, s3_server  # noqa: F401
from tests.edge.ota_release import release_dir
from tests.edge.plates import HEIGHT, MARGIN, PLATE_A, WIDTH, jpeg, plate_image
from tests.sync.onedevice import OneDeviceCloud, one_device_cloud

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres, pytest.mark.s3, pytest.mark.timeout(180)]

CANARY = "canary-1"
GRID = CalibrationGrid.uniform(WIDTH, HEIGHT, PLATE_96, MARGIN)


@dataclass
class Cloud(OneDeviceCloud):
    key: Path  # the admin's signing key (PEM)
    public_key: str


def _cli(settings: Any, *argv: str) -> int:
    return run_models(settings, build_parser().parse_args(["models", *argv]))


@pytest.fixture
def cloud(
    migrated_db: str,  # noqa: F811
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Cloud]:
    with one_device_cloud(migrated_db, s3_server, tmp_path / "cloud", CANARY) as base:
        key = tmp_path / "signing.pem"
        assert _cli(base.settings, "keygen", "--out", str(key)) == 0
        public = public_key_text(load_private_key(key.read_bytes()))
        yield Cloud(**vars(base), key=key, public_key=public)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def publish(cloud: Cloud, tmp_path: Path, version: str, **kw: Any) -> None:
    folder = release_dir(tmp_path / f"release-{version}", **kw)
    argv = ["publish", "--key", str(cloud.key), "--dir", str(folder), "--version", version]
    assert _cli(cloud.world.settings, *argv) == 0


def assign(cloud: Cloud, version: str) -> str:
    body = {
        "name": "hi-wells",
        "version": version,
        "site_id": str(cloud.world.site_a),
        "devices": [CANARY],
        "canary": CANARY,
        "shadow_plates": 3,
        "agreement_threshold": 0.9,
    }
    resp = httpx.post(
        f"{cloud.api}/api/v1/models/assignments",
        json=body,
        headers=cloud.world.actors["admin"].headers,
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def rollout(cloud: Cloud, assignment: str) -> dict[str, Any]:
    rows = httpx.get(
        f"{cloud.api}/api/v1/models/rollouts",
        headers=cloud.world.actors["admin"].headers,
        timeout=10,
    ).json()
    mine = [r for r in rows if r["assignment_id"] == assignment and r["device_slug"] == CANARY]
    assert len(mine) == 1, rows
    row: dict[str, Any] = mine[0]
    return row


_seed = iter(range(100, 1_000_000))


def submit(app: Any) -> None:
    from edge.schemas import RunRequest

    ticket = app.intake.submit_image(
        jpeg(plate_image(PLATE_A, seed=next(_seed))), "p.jpg", RunRequest(sample_number="S-1")
    )
    state = app.intake.wait(ticket.id, 30)
    assert state.state == "done", state


def tamper_object(cloud: Cloud, key: str) -> None:
    s3 = cloud.world.settings
    client = boto3.client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key.get_secret_value(),
        aws_secret_access_key=s3.s3_secret_key.get_secret_value(),
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    body = bytearray(client.get_object(Bucket=s3.s3_bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=s3.s3_bucket, Key=key, Body=bytes(body))


def test_a_signed_model_rolls_out_to_a_canary_appliance(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.app import Appliance
    from edge.config import EdgeSettings
    from edge.detect.settings import SHIPPED_WELLS_DIR

    for name in list(__import__("os").environ):
        if name.startswith("MICROPLATE_EDGE_"):
            monkeypatch.delenv(name)
    publish(cloud, tmp_path, "3.2.0")
    publish(cloud, tmp_path, "3.3.0", perturbed=True)
    publish(cloud, tmp_path, "3.4.0")
    publish(cloud, tmp_path, "3.1.0")  # properly signed, but older than what the device runs
    tamper_object(cloud, "_models/hi-wells/3.4.0/tilted.onnx")

    running = tmp_path / "hi-wells"
    shutil.copytree(SHIPPED_WELLS_DIR, running)
    pub = tmp_path / "model-signing.pub"
    pub.write_text(cloud.public_key + "\n", encoding="ascii")
    settings = EdgeSettings(
        data_dir=tmp_path / "edge",
        share_dir=tmp_path / "share",
        site_id=cloud.world.slug_a,
        device_id=CANARY,
        detector={"type": "fake", "wells_model_dir": str(running)},
        retention={"disk_floor_mb": 1},
        sync={
            "broker_url": f"mqtt://127.0.0.1:{cloud.broker.port}",
            "username": f"{cloud.world.slug_a}.{CANARY}",
            "password": cloud.password,
            "api_base_url": cloud.api,
            "device_token": cloud.token,
            "upload_images": [],
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "poll_s": 0.1,
        },
        ota={"public_key_file": str(pub), "retry_max_s": 1},
    )
    app = Appliance(settings)
    app.start()
    try:
        app.calibration.set(GRID, actor="sup")
        assert app.sync is not None and app.sync.link.wait_connected(10)
        version = lambda: app.reading.wells.model.version  # noqa: E731

        # 1. a release that agrees: shadowed on 3 plates, switched, the rollout is done
        first = assign(cloud, "3.2.0")
        wait_for(lambda: rollout(cloud, first)["state"] == "shadowing", "3.2.0 shadowing")
        for _ in range(3):
            submit(app)
        wait_for(lambda: rollout(cloud, first)["state"] == "switched", "3.2.0 switched")
        row = rollout(cloud, first)
        assert row["stage"] == "done" and row["shadow_plates"] == 3
        assert row["agreement"] >= 0.9 and row["candidate_ms"] > 0 and row["current_ms"] > 0
        assert version() == "3.2.0"

        # 2. a release that disagrees: rolled back, the canary halts the rollout
        second = assign(cloud, "3.3.0")
        wait_for(lambda: rollout(cloud, second)["state"] == "shadowing", "3.3.0 shadowing")
        for _ in range(3):
            if rollout(cloud, second)["state"] == "rolled_back":
                break
            submit(app)
        wait_for(lambda: rollout(cloud, second)["state"] == "rolled_back", "3.3.0 rolled back")
        row = rollout(cloud, second)
        assert row["stage"] == "halted" and row["reason"]
        assert version() == "3.2.0"

        # 3. a file changed in object storage after signing: refused, nothing loaded
        third = assign(cloud, "3.4.0")
        wait_for(lambda: rollout(cloud, third)["state"] == "refused", "3.4.0 refused")
        row = rollout(cloud, third)
        assert row["stage"] == "halted" and row["reason"].startswith("tampered:")
        assert version() == "3.2.0"
        ota = app.health.status().ota
        assert ota is not None and ota["active"]["version"] == "3.2.0" and ota["shadow"] is None
        # 4. an older release (signed, intact) assigned after 3.2.0: refused as a downgrade
        fourth = assign(cloud, "3.1.0")
        wait_for(lambda: rollout(cloud, fourth)["state"] == "refused", "3.1.0 refused")
        row = rollout(cloud, fourth)
        assert row["stage"] == "halted" and row["reason"].startswith("downgrade:"), row
        assert version() == "3.2.0"
        submit(app)  # the model in force kept reading throughout
    finally:
        app.stop()

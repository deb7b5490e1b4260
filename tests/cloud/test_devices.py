"""Provisioning and revocation, checked against a real Mosquitto and a real S3 server."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest

from cloud.mqtt_auth import hash_mqtt_password, verify_mqtt_password
from tests.cloud.conftest import S3Server, free_port, make_settings
from tests.cloud.world import World, build_world, open_client

pytestmark = [pytest.mark.postgres, pytest.mark.mqtt, pytest.mark.s3]


@pytest.fixture(scope="module")
def broker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("broker")


@pytest.fixture(scope="module")
def world(migrated_db: str, s3_server: S3Server, broker_dir: Path) -> Iterator[World]:
    settings = make_settings(
        migrated_db,
        broker_dir,
        s3_server,
        mosquitto_pid_file=broker_dir / "mosquitto.pid",
        login_rate_per_minute=500,
    )
    with open_client(settings) as client:
        yield build_world(settings, client)


@pytest.fixture(scope="module")
def broker(world: World, broker_dir: Path) -> Iterator[int]:
    """A private Mosquitto reading the password and ACL files the cloud writes."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    from cloud.crud.devices import sync_broker_files

    with world.sessions()() as session:
        sync_broker_files(session, world.settings)
    port = free_port()
    conf = broker_dir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        # Root-run tests: keep root so the broker can read files under pytest's 0700 tmp dirs.
        "user root\n"
        f"password_file {world.settings.mqtt_password_file}\n"
        f"acl_file {world.settings.mqtt_acl_file}\n"
        "persistence false\n"
        f"log_dest file {broker_dir / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)])
    (broker_dir / "mosquitto.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


def test_mqtt_hash_matches_mosquitto_format() -> None:
    encoded = hash_mqtt_password("s3cret")
    kind, iterations, _salt, _digest = encoded.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert verify_mqtt_password("s3cret", encoded)
    assert not verify_mqtt_password("other", encoded)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_mosquitto_passwd_hashes_verify_with_our_code(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "u", "pa55word"], check=True)
    encoded = path.read_text().strip().split(":", 1)[1]
    assert verify_mqtt_password("pa55word", encoded)


def _provision(world: World, slug: str) -> dict[str, str]:
    resp = world.client.post(
        "/api/v1/devices",
        json={"site_id": str(world.site_a), "slug": slug, "name": "Bench reader"},
        headers=world.actors["admin"].headers,
    )
    assert resp.status_code == 201, resp.text
    bundle: dict[str, str] = resp.json()
    return bundle


class _Client:
    def __init__(self, port: int, username: str, password: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.rc: object = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props=None):  # type: ignore[no-untyped-def]
        self.rc = rc
        self.connected.set()

    def ok(self) -> bool:
        self.connected.wait(5)
        return not getattr(self.rc, "is_failure", True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_provisioned_device_is_confined_to_its_subtree(world: World, broker: int) -> None:
    bundle = _provision(world, "acl-check")
    assert set(bundle) >= {
        "device_id",
        "site",
        "device",
        "broker_url",
        "mqtt_username",
        "mqtt_password",
        "api_base_url",
        "device_token",
    }
    own = f"microplate/v1/{bundle['site']}/{bundle['device']}/runs"
    other = f"microplate/v1/{world.slug_b}/reader-1/runs"
    ingest = _Client(
        broker,
        world.settings.mqtt_ingest_username,
        world.settings.mqtt_ingest_password.get_secret_value(),
    )  # type: ignore[union-attr]
    assert ingest.ok()
    ingest.client.subscribe("microplate/v1/#", qos=1)
    time.sleep(0.3)
    device = _Client(broker, bundle["mqtt_username"], bundle["mqtt_password"])
    assert device.ok()
    device.client.publish(own, b"mine", qos=1).wait_for_publish(5)
    device.client.publish(other, b"not mine", qos=1).wait_for_publish(5)
    time.sleep(0.5)
    topics = [t for t, _ in ingest.messages]
    assert own in topics
    assert other not in topics
    wrong = _Client(broker, bundle["mqtt_username"], "wrong-password")
    assert not wrong.ok()
    for c in (ingest, device, wrong):
        c.close()


def test_revocation_cuts_the_device_off(world: World, broker: int) -> None:
    bundle = _provision(world, "to-revoke")
    token_headers = {"Authorization": f"Bearer {bundle['device_token']}"}
    assert world.client.get("/api/v1/device/me", headers=token_headers).status_code == 200
    ingest = _Client(
        broker,
        world.settings.mqtt_ingest_username,
        world.settings.mqtt_ingest_password.get_secret_value(),
    )  # type: ignore[union-attr]
    assert ingest.ok()
    ingest.client.subscribe("microplate/v1/#", qos=1)
    device = _Client(broker, bundle["mqtt_username"], bundle["mqtt_password"])
    assert device.ok()
    dynsec = world.settings.mqtt_dynsec_file
    assert dynsec is not None
    assert f'"username": "{bundle["mqtt_username"]}"' in dynsec.read_text()
    revoked = world.client.post(
        f"/api/v1/devices/{bundle['device_id']}/revoke", headers=world.actors["admin"].headers
    )
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert world.client.get("/api/v1/device/me", headers=token_headers).status_code == 401
    assert bundle["mqtt_username"] not in world.settings.mqtt_password_file.read_text()  # type: ignore[union-attr]
    assert bundle["mqtt_username"] not in dynsec.read_text()
    time.sleep(0.5)  # SIGHUP reload
    own = f"microplate/v1/{bundle['site']}/{bundle['device']}/runs"
    device.client.publish(own, b"after revoke", qos=0)
    time.sleep(0.5)
    assert (own, b"after revoke") not in ingest.messages
    again = _Client(broker, bundle["mqtt_username"], bundle["mqtt_password"])
    assert not again.ok()
    for c in (ingest, device, again):
        c.close()
    actions = [
        e["action"]
        for e in world.client.get("/api/v1/audit", headers=world.actors["admin"].headers).json()
    ]
    assert "device.revoked" in actions and "device.provisioned" in actions


def test_user_tokens_never_work_on_device_routes_and_vice_versa(world: World) -> None:
    admin = world.actors["admin"].headers
    assert world.client.get("/api/v1/device/me", headers=admin).status_code == 401
    device = {"Authorization": f"Bearer {world.device_token_a}"}
    assert world.client.get("/api/v1/auth/me", headers=device).status_code == 401
    assert world.client.get("/api/v1/sites", headers=device).status_code == 401
    forged = world.device_token_a[:-4] + "AAAA"
    assert (
        world.client.get(
            "/api/v1/device/me", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )


def test_presigned_put_lands_under_the_device_prefix(world: World, s3_server: S3Server) -> None:
    run_id = uuid.uuid4()
    device = {"Authorization": f"Bearer {world.device_token_a}"}
    resp = world.client.post(
        "/api/v1/device/images/presign",
        json={"run_id": str(run_id), "kind": "annotated", "size_bytes": 6},
        headers=device,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["key"] == f"{world.slug_a}/reader-1/{run_id}/annotated.jpg"
    put = httpx.put(body["url"], content=b"\xff\xd8jpeg", headers=body["headers"])
    assert put.status_code == 200, put.text
    store = world.client.app.state.microplate.store  # type: ignore[attr-defined]
    assert store.exists(body["key"])
    # The signature covers the key: the same URL cannot write elsewhere.
    tampered = body["url"].replace(str(run_id), str(uuid.uuid4()))
    assert httpx.put(tampered, content=b"xxxxxx", headers=body["headers"]).status_code == 403
    # Size and type are signed too: a bigger body, or HTML, is refused by the store.
    big = {**body["headers"], "Content-Length": "5000"}
    assert httpx.put(body["url"], content=b"x" * 5000, headers=big).status_code == 403
    html = {**body["headers"], "Content-Type": "text/html"}
    assert httpx.put(body["url"], content=b"<html>", headers=html).status_code == 403


def test_presign_refuses_oversized_images(world: World) -> None:
    device = {"Authorization": f"Bearer {world.device_token_a}"}
    for size in (200 * 1024 * 1024, 0):
        resp = world.client.post(
            "/api/v1/device/images/presign",
            json={"run_id": str(uuid.uuid4()), "kind": "annotated", "size_bytes": size},
            headers=device,
        )
        assert resp.status_code == 422, resp.text

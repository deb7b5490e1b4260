"""Real sync into the dashboard: a device provisioned on the devices page enrolls with its
bundle, its edge SyncWorker publishes a plate over Mosquitto (which reads the password and
ACL files the cloud wrote), the ingest worker stores it, and the open overview updates live.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud.conftest import free_port
from tests.e2e.dashboard.conftest import Cloud, shot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.s3, pytest.mark.mqtt]


@pytest.fixture()
def broker(cloud: Cloud, tmp_path: Path) -> Iterator[int]:
    """A private Mosquitto on the cloud's own password and ACL files (pid file for SIGHUP)."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    from cloud.crud.devices import sync_broker_files
    from cloud.db import make_engine, make_sessionmaker

    settings = cloud.settings
    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine)() as session:
            sync_broker_files(session, settings)
    finally:
        engine.dispose()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        "user root\n"
        f"password_file {settings.mqtt_password_file}\n"
        f"acl_file {settings.mqtt_acl_file}\n"
        "persistence false\n"
        f"log_dest file {tmp_path / 'mosquitto.log'}\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)])
    assert settings.mosquitto_pid_file is not None
    settings.mosquitto_pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    try:
        yield port
    finally:
        settings.mosquitto_pid_file.unlink(missing_ok=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture()
def ingest(cloud: Cloud, broker: int) -> Iterator[object]:
    from cloud.ingest import IngestOptions, IngestWorker

    settings = cloud.settings.model_copy(update={"mqtt_broker_url": f"mqtt://127.0.0.1:{broker}"})
    worker = IngestWorker(settings, IngestOptions(client_id="ingest-dash", batch_wait_s=0.02))
    worker.start()
    assert worker.wait_connected(10)
    try:
        yield worker
    finally:
        worker.stop()
        worker.engine.dispose()


def test_a_plate_synced_from_an_appliance_appears_live(
    page, cloud: Cloud, broker: int, ingest: object, tmp_path: Path
) -> None:
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncSettings, SyncWorker
    from tests.sync.world import new_run, open_store, queue_runs, template_message

    sign_in(page, cloud, "admin")
    page.goto("/ui/devices")
    page.get_by_label("Site").select_option(str(cloud.data.site_a))
    page.get_by_label("Device id (in MQTT topics)").fill("sync-1")
    page.get_by_role("button", name="Provision").click()
    with page.expect_download() as download:
        page.get_by_test_id("download-bundle").click()
    bundle = json.loads(download.value.path().read_text(encoding="utf-8"))

    page.goto("/ui/")
    page.wait_for_selector("body[data-live-connected]")
    row = "[data-testid=device-row][data-device=sync-1]"
    assert page.locator(row).get_attribute("data-state") == "never"

    store = open_store(tmp_path / "edge.db")
    sample = f"SYNC-{cloud.data.tag}"
    message = new_run(template_message(bundle["site"], bundle["device"]), sample)
    queue_runs(store, [message])
    settings = SyncSettings.model_validate(
        {
            "broker_url": f"mqtt://127.0.0.1:{broker}",
            "username": bundle["mqtt_username"],
            "password": bundle["mqtt_password"],
            "status_interval_s": 1.0,
            "poll_s": 0.1,
            "reconnect_min_s": 1,
            "reconnect_max_s": 2,
        }
    )
    worker = SyncWorker(
        settings, outbox=Outbox(store), site_id=bundle["site"], device_id=bundle["device"]
    )
    worker.start()
    try:
        # Status and the run arrive through the broker and the ingest worker; the page,
        # never reloaded, follows the cloud's events.
        page.wait_for_selector(f"{row}[data-state=online]", timeout=20_000)
        page.locator(row).get_by_role("link", name=sample).wait_for(timeout=20_000)
        deadline = time.monotonic() + 20
        while outbox.backlog(store)[0] != 0:
            assert time.monotonic() < deadline, "the cloud never acknowledged the run"
            time.sleep(0.1)
        shot(page, "16-overview-synced")
    finally:
        worker.stop()
    # A clean stop publishes online=false (as the last will would); the page shows it.
    page.wait_for_selector(f"{row}[data-state=offline]", timeout=20_000)

    page.locator(row).get_by_role("link", name=sample).click()
    page.wait_for_url("**/ui/runs/*")
    flowing = page.get_by_test_id("platemap").locator("tbody .well.flowing")
    expected = sum(1 for w in message.wells.values() if w.state == "flowing")
    assert flowing.count() == expected
    store.close()

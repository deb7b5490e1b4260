"""The appliance starts its sync worker when a broker is configured, and stops it first."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.wire import RunMessage, parse_message
from edge.app import Appliance
from edge.schemas import RunRequest
from tests.edge.conftest import SettingsFactory
from tests.edge.plates import PLATE_A, jpeg, plate_image

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(90)]

BROKER = "mqtt://127.0.0.1:1883"  # the machine's shared, anonymous Mosquitto


def _wait(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_no_broker_no_worker(app: Appliance) -> None:
    assert app.sync is None
    status = app.health.status().sync
    assert (status.configured, status.connected) == (False, None)


def test_configured_sync_publishes_runs_and_reports_its_link(
    make_settings: SettingsFactory, make_app: Callable[..., Appliance]
) -> None:
    device = "t-" + uuid.uuid4().hex[:12]
    received: queue.Queue[bytes] = queue.Queue()
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{device}")
    watcher.on_message = lambda _c, _u, msg: received.put(msg.payload)
    watcher.connect("127.0.0.1", 1883)
    watcher.subscribe(f"microplate/v1/site-1/{device}/runs", qos=1)
    watcher.loop_start()
    try:
        settings = make_settings(
            device_id=device,
            sync={"broker_url": BROKER, "username": device, "upload_images": []},
        )
        app = make_app(settings)
        assert app.sync is not None
        assert _wait(lambda: bool(app.health.status().sync.connected), 20), "never connected"
        ticket = app.intake.submit_image(
            jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="S-SYNC")
        )
        state = app.intake.wait(ticket.id, 30)
        assert state.state == "done"
        message = parse_message(received.get(timeout=30))
        assert isinstance(message, RunMessage)
        assert str(message.run_id) == state.run_id
        assert message.device_id == device
        assert message.images == ()  # nothing is uploaded, so no image is named to the cloud
        worker = app.sync
        app.stop()
        assert app.sync is None
        assert not worker.link.connected
    finally:
        watcher.loop_stop()
        watcher.disconnect()

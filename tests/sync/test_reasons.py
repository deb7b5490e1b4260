"""Sync says why it does not work: each cause gets its reason code and operator sentence,
against a real Mosquitto with the cloud's generated ACL (no mocks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.sync import reasons
from tests.sync.conftest import Broker
from tests.sync.harness import free_port
from tests.sync.world import DeviceAccount, open_store, sync_settings

pytestmark = [pytest.mark.mqtt]


def wait_reason(worker, code: str, timeout: float = 20.0) -> reasons.Reason:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = worker.reason()
        if seen.code == code:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"reason stayed {seen}, expected {code}")


def start_worker(tmp_path: Path, settings, acc: DeviceAccount, device: str | None = None):  # type: ignore[no-untyped-def]
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    store = open_store(tmp_path / "edge.db")
    worker = SyncWorker(
        settings, outbox=Outbox(store), site_id=acc.site, device_id=device or acc.device
    )
    worker.start()
    return worker, store


def run_case(tmp_path: Path, settings, acc, code: str, device: str | None = None):  # type: ignore[no-untyped-def]
    worker, store = start_worker(tmp_path, settings, acc, device)
    try:
        return worker, wait_reason(worker, code)
    finally:
        worker.stop()
        store.close()


def test_wrong_password(broker: Broker, tmp_path: Path) -> None:
    acc = broker.devices[0]
    settings = sync_settings(broker.port, acc, password="wrong-" + acc.password)
    _, why = run_case(tmp_path, settings, acc, reasons.CREDENTIALS_REFUSED)
    assert "enrollment bundle" in why.message
    assert acc.password not in why.message


def test_unreachable_broker(tmp_path: Path) -> None:
    acc = DeviceAccount("site-0", "dev-0", "pw")
    port = free_port()
    _, why = run_case(tmp_path, sync_settings(port, acc), acc, reasons.BROKER_UNREACHABLE)
    assert f"127.0.0.1:{port}" in why.message and "refused" in why.message.lower()


def test_tls_to_a_plain_listener(broker: Broker, tmp_path: Path) -> None:
    acc = broker.devices[0]
    settings = sync_settings(broker.port, acc, broker_url=f"mqtts://127.0.0.1:{broker.port}")
    _, why = run_case(tmp_path, settings, acc, reasons.TLS_ERROR)
    assert "ca_cert_file" in why.message


def test_identity_mismatch_is_said_at_start_and_the_broker_refusal_is_seen(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acc = broker.devices[0]  # site-0.dev-0, but the appliance calls itself dev-1
    caplog.set_level(logging.WARNING, logger="edge.sync")
    worker, store = start_worker(tmp_path, sync_settings(broker.port, acc), acc, "dev-1")
    try:
        why = wait_reason(worker, reasons.IDENTITY_MISMATCH)
        assert "site-0/dev-1" in why.message and "'site-0.dev-0'" in why.message
        assert any("identity_mismatch" in r.getMessage() for r in caplog.records)
        # Connected, yet the broker refuses the subscription (MQTT v5 SUBACK 0x87).
        wait_for(lambda: "Not authorized" in worker.link.refused, "a refusal")
        assert worker.link.connected
        assert worker.snapshot()["reason"] == reasons.IDENTITY_MISMATCH
    finally:
        worker.stop()
        store.close()
    # Logged once per change, not on every round.
    assert sum("identity_mismatch" in r.getMessage() for r in caplog.records) == 1


def test_a_refused_publish_is_reported(broker: Broker) -> None:
    from edge.sync.link import MqttLink

    acc, other = broker.devices[0], broker.devices[1]
    link = MqttLink(
        sync_settings(broker.port, acc),
        client_id=acc.username,
        subscriptions=[f"microplate/v1/{acc.site}/{acc.device}/acks"],
        on_message=lambda topic, payload: None,
    )
    link.start()
    try:
        assert link.wait_connected(10)
        assert link.publish(f"microplate/v1/{other.site}/{other.device}/runs", b"{}")
        wait_for(lambda: link.refused.startswith("publish"), "the PUBACK refusal")
        assert link.publish(f"microplate/v1/{acc.site}/{acc.device}/status", b"{}")
        wait_for(lambda: link.refused == "", "an accepted publish clearing it")
    finally:
        link.stop()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

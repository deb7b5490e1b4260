"""Devices stay in their lane on the broker (issue 17, point 2), against a real Mosquitto
configured with the cloud's own files: `render_listeners` (mosquitto.conf), and the password
and ACL files `render_password_file` / `render_acl_file` write from the device registry.

- A device that connects with the ingest's client id, or another device's, takes over no
  session: on the device listener the broker makes every client id the account's user name.
- A device that joins the ingest's shared subscription (by the old, well-known group name or a
  guess) takes no share of other devices' runs: the group is a secret of the ingest.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.sync.harness import free_port, wait_port, world_dir
from tests.sync.mqttc import MqttProbe
from tests.sync.world import INGEST_USER, DeviceAccount, accounts

pytestmark = pytest.mark.mqtt

INGEST_PASSWORD = "ingest-secret-for-this-test"


@dataclass
class SecureBroker:
    service_port: int
    device_port: int
    devices: list[DeviceAccount]


@pytest.fixture
def secure_broker() -> Iterator[SecureBroker]:
    from cloud.mqtt_auth import (
        BrokerAccount,
        hash_mqtt_password,
        render_acl_file,
        render_listeners,
        render_password_file,
    )

    devices = accounts(1, 3)
    work = world_dir("mp-broker-id-")
    broker_accounts = [
        BrokerAccount(a.username, hash_mqtt_password(a.password), a.site, a.device) for a in devices
    ]
    service = [f"{INGEST_USER}:{hash_mqtt_password(INGEST_PASSWORD)}"]
    (work / "passwd").write_text(render_password_file(broker_accounts, service=service))
    (work / "acl").write_text(render_acl_file(broker_accounts, ingest_username=INGEST_USER))
    service_port, device_port = free_port(), free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        + render_listeners(
            password_file=work / "passwd",
            acl_file=work / "acl",
            service_port=service_port,
            device_port=device_port,
            device_bind="127.0.0.1",
        )
    )
    log = (work / "log").open("ab")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_port(service_port)
        wait_port(device_port)
        yield SecureBroker(service_port, device_port, devices)
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _ingest_subscriptions(port: int) -> tuple[str, list[str]]:
    """The client id and subscriptions the real ingest worker uses (no connection made)."""
    from cloud.ingest import IngestWorker
    from cloud.settings import CloudSettings

    settings = CloudSettings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        mqtt_broker_url=f"mqtt://127.0.0.1:{port}",
        mqtt_ingest_password=INGEST_PASSWORD,
    )
    worker = IngestWorker(settings)
    try:
        return str(worker.client._client_id.decode()), worker._subscriptions()
    finally:
        worker.engine.dispose()


def _device(b: SecureBroker, i: int, client_id: str) -> MqttProbe:
    acc = b.devices[i]
    probe = MqttProbe(b.device_port, acc.username, acc.password, client_id=client_id)
    assert not probe.connect().is_failure
    return probe


def test_a_device_cannot_take_over_the_ingests_or_another_devices_session(
    secure_broker: SecureBroker,
) -> None:
    b = secure_broker
    client_id, _subs = _ingest_subscriptions(b.service_port)
    assert "." not in client_id
    ingest = MqttProbe(b.service_port, INGEST_USER, INGEST_PASSWORD, client_id=client_id)
    assert not ingest.connect().is_failure
    victim = _device(b, 1, b.devices[1].username)
    attackers = [
        _device(b, 0, client_id),  # the ingest's id
        _device(b, 0, b.devices[1].username),  # another device's id
        _device(b, 2, "microplate-ingest"),
    ]
    try:
        time.sleep(1.0)
        assert ingest.client.is_connected(), "a device's CONNECT kicked the ingest off"
        assert victim.client.is_connected(), "a device's CONNECT kicked another device off"
    finally:
        for c in (ingest, victim, *attackers):
            c.close()


def test_a_device_cannot_take_a_share_of_other_devices_runs(secure_broker: SecureBroker) -> None:
    b = secure_broker
    client_id, subs = _ingest_subscriptions(b.service_port)
    ingest = MqttProbe(b.service_port, INGEST_USER, INGEST_PASSWORD, client_id=client_id)
    assert not ingest.connect().is_failure
    for topic in subs:
        assert ingest.subscribe(topic)[0].value < 0x80
    thief = _device(b, 0, "thief")
    for group in ("ingest", "microplate-ingest", "g"):
        thief.subscribe(f"$share/{group}/microplate/v1/+/+/runs")
    sender = _device(b, 1, "sender")
    topic = f"microplate/v1/{b.devices[1].site}/{b.devices[1].device}/runs"
    try:
        sent = [b"run-%d" % i for i in range(20)]
        for payload in sent:
            assert sender.publish(topic, payload).value == 0
        got = [p for t, p in ingest.drain(2.0) if t == topic]
        assert sorted(got) == sorted(sent), f"the ingest got {len(got)} of {len(sent)}"
        assert thief.drain(0.2) == []
    finally:
        for c in (ingest, thief, sender):
            c.close()


def test_service_client_ids_never_look_like_a_devices() -> None:
    from cloud.ingest.cli import add_parser, options_from_args
    from cloud.ingest.options import default_client_id

    assert "." not in default_client_id("microplate-ingest")

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["ingest", "--client-id", "site.device"])
    with pytest.raises(ValueError, match="dot"):
        options_from_args(args)

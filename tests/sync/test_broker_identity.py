"""Devices stay in their lane on the broker (issue 17, point 2), against a real Mosquitto
configured with the cloud's own files: `render_listeners` (mosquitto.conf), the password and
ACL files of the ingest's listener (`render_password_file` / `render_acl_file`) and the device
listener's dynamic-security file (`render_dynsec_config`), all from the device registry.

- A device that connects with the ingest's client id, or another device's, takes over no
  session: on the device listener the broker makes every client id the account's user name.
- A device may subscribe only to what it may read under its own prefix: `$share/...` (the
  ingest's real group included), `#`, another device's topics, `$SYS` and `$CONTROL` get
  SUBACK 0x87, and it takes no share of other devices' runs.
- Everything a device does in normal operation still works, its last will included.
- A device removed from the registry is refused once the broker has restarted on the new file.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sync.harness import free_port, wait_port, world_dir
from tests.sync.mqttc import MqttProbe
from tests.sync.world import INGEST_USER, DeviceAccount, accounts

pytestmark = pytest.mark.mqtt

INGEST_PASSWORD = "ingest-secret-for-this-test"
NOT_AUTHORIZED = 0x87


@dataclass
class SecureBroker:
    work: Path
    service_port: int
    device_port: int
    devices: list[DeviceAccount]
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def write_files(self, devices: list[DeviceAccount]) -> None:
        """What `cloud.crud.devices.sync_broker_files` writes for these active devices."""
        from cloud.mqtt_auth import (
            BrokerAccount,
            hash_mqtt_password,
            render_acl_file,
            render_dynsec_config,
            render_password_file,
            write_atomic,
        )

        registry = [
            BrokerAccount(a.username, hash_mqtt_password(a.password), a.site, a.device)
            for a in devices
        ]
        service = [f"{INGEST_USER}:{hash_mqtt_password(INGEST_PASSWORD)}"]
        write_atomic(self.work / "passwd", render_password_file(registry, service=service))
        write_atomic(self.work / "acl", render_acl_file(registry, ingest_username=INGEST_USER))
        write_atomic(self.work / "dynsec.json", render_dynsec_config(registry))

    def start(self) -> None:
        with (self.work / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.work / "mosquitto.conf")], stdout=log, stderr=log
            )
        wait_port(self.service_port)
        wait_port(self.device_port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def secure_broker() -> Iterator[SecureBroker]:
    from cloud.mqtt_auth import render_listeners

    work = world_dir("mp-broker-id-")
    b = SecureBroker(work, free_port(), free_port(), accounts(1, 3))
    b.write_files(b.devices)
    (work / "mosquitto.conf").write_text(
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        + render_listeners(
            password_file=work / "passwd",
            acl_file=work / "acl",
            dynsec_file=work / "dynsec.json",
            service_port=b.service_port,
            device_port=b.device_port,
            device_bind="127.0.0.1",
        )
    )
    b.start()
    try:
        yield b
    finally:
        if b.proc is not None:
            b.proc.kill()
            b.proc.wait(10)
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


def _ingest(b: SecureBroker) -> tuple[MqttProbe, list[str]]:
    client_id, subs = _ingest_subscriptions(b.service_port)
    ingest = MqttProbe(b.service_port, INGEST_USER, INGEST_PASSWORD, client_id=client_id)
    assert not ingest.connect().is_failure
    for topic in subs:
        assert ingest.subscribe(topic)[0].value < 0x80
    return ingest, subs


def test_a_device_cannot_subscribe_outside_its_own_topics(secure_broker: SecureBroker) -> None:
    b = secure_broker
    ingest, subs = _ingest(b)
    thief = _device(b, 0, "thief")
    other = f"microplate/v1/{b.devices[1].site}/{b.devices[1].device}"
    mine = f"microplate/v1/{b.devices[0].site}/{b.devices[0].device}"
    filters = [
        *subs,  # the ingest's own shared subscriptions, real secret group included
        "$share/ingest/microplate/v1/+/+/runs",
        "$share/microplate-ingest/microplate/v1/+/+/runs",
        "$share/g/#",
        f"$share/g/{mine}/acks",  # even its own topic, through a share group
        "#",
        "microplate/v1/#",
        "microplate/v1/+/+/runs",
        f"{other}/runs",
        f"{other}/acks",
        f"{mine}/runs",  # it may not read back what it sends
        "$SYS/#",
        "$CONTROL/dynamic-security/v1",
    ]
    assert any(f.startswith("$share/") for f in subs)
    refused = {f: [rc.value for rc in thief.subscribe(f)] for f in filters}
    assert refused == {f: [NOT_AUTHORIZED] for f in filters}
    sender = _device(b, 1, "sender")
    topic = f"{other}/runs"
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


def test_everything_a_device_does_still_works(secure_broker: SecureBroker) -> None:
    b = secure_broker
    ingest, _subs = _ingest(b)
    acc = b.devices[0]
    base = f"microplate/v1/{acc.site}/{acc.device}"
    assert ingest.subscribe(f"microplate/v1/{acc.site}/+/status")[0].value < 0x80
    # The cloud's desired config is retained before the device subscribes.
    assert ingest.publish(f"{base}/config", b"desired", retain=True).value < 0x80
    dev = MqttProbe(b.device_port, acc.username, acc.password, client_id="whatever")
    dev.client.will_set(f"{base}/status", b"offline", qos=1)
    assert not dev.connect().is_failure
    try:
        assert [rc.value for rc in dev.subscribe(f"{base}/acks")] == [1]
        assert [rc.value for rc in dev.subscribe(f"{base}/config")] == [1]
        assert dev.publish(f"{base}/runs", b"run").value == 0
        assert dev.publish(f"{base}/status", b"online").value == 0
        assert dev.publish(f"{base}/acks", b"forged").value == NOT_AUTHORIZED
        assert dev.publish(f"microplate/v1/{acc.site}/other/runs", b"x").value == NOT_AUTHORIZED
        assert ingest.publish(f"{base}/acks", b"ack").value < 0x80
        got_dev = dev.drain(1.0)
        assert (f"{base}/config", b"desired") in got_dev
        assert (f"{base}/acks", b"ack") in got_dev
        assert all(t in (f"{base}/config", f"{base}/acks") for t, _ in got_dev), got_dev
        got_ingest = ingest.drain(0.5)
        assert (f"{base}/runs", b"run") in got_ingest
        assert (f"{base}/status", b"online") in got_ingest
        # Dropped without DISCONNECT: the broker publishes its last will.
        dev.client._sock_close()  # type: ignore[attr-defined]
        dev.client.loop_stop()
        assert (f"{base}/status", b"offline") in ingest.drain(3.0)
    finally:
        dev.client.loop_stop()
        ingest.close()


def test_a_removed_device_is_refused_after_the_broker_restarts(
    secure_broker: SecureBroker,
) -> None:
    b = secure_broker
    kept, removed = b.devices[0], b.devices[2]
    b.write_files([d for d in b.devices if d is not removed])
    b.stop()
    b.start()
    refused = MqttProbe(b.device_port, removed.username, removed.password)
    try:
        assert refused.connect().is_failure
    finally:
        refused.close()
    ok = MqttProbe(b.device_port, kept.username, kept.password)
    try:
        assert not ok.connect().is_failure
    finally:
        ok.close()


def test_service_client_ids_never_look_like_a_devices() -> None:
    from cloud.ingest.cli import add_parser, options_from_args
    from cloud.ingest.options import default_client_id

    assert "." not in default_client_id("microplate-ingest")

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["ingest", "--client-id", "site.device"])
    with pytest.raises(ValueError, match="dot"):
        options_from_args(args)

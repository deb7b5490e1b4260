"""A device cannot publish or read another device's topics (real Mosquitto, passwords + ACL).

The password file uses the cloud's PBKDF2-SHA512 hashes and the ACL file is the one the cloud
generates from its device registry (`cloud.mqtt_auth.render_acl_file`).
"""

from __future__ import annotations

import pytest

from tests.sync.conftest import Broker
from tests.sync.mqttc import MqttProbe

pytestmark = pytest.mark.mqtt

NOT_AUTHORIZED = 0x87


def client(broker: Broker, index: int) -> MqttProbe:
    acc = broker.devices[index]
    c = MqttProbe(broker.port, acc.username, acc.password, client_id=f"{acc.username}-t")
    assert not c.connect().is_failure
    return c


def observer(broker: Broker) -> MqttProbe:
    from tests.sync.world import INGEST_USER

    c = MqttProbe(broker.port, INGEST_USER, broker.ingest_password, client_id="observer")
    assert not c.connect().is_failure
    assert c.subscribe("microplate/v1/#")[0].value < 0x80
    return c


def test_device_publishes_only_on_its_own_subtree(broker: Broker) -> None:
    obs = observer(broker)
    a = client(broker, 0)  # site-0/dev-0
    mine = f"microplate/v1/{broker.devices[0].site}/{broker.devices[0].device}/runs"
    same_site = f"microplate/v1/{broker.devices[1].site}/{broker.devices[1].device}/runs"
    other_site = f"microplate/v1/{broker.devices[2].site}/{broker.devices[0].device}/runs"
    try:
        assert a.publish(mine, b"ok").value == 0
        assert a.publish(same_site, b"forged").value == NOT_AUTHORIZED
        assert a.publish(other_site, b"forged").value == NOT_AUTHORIZED
        assert a.publish("microplate/v1/x/y/runs", b"forged").value == NOT_AUTHORIZED
        got = obs.drain(1.0)
        assert got == [(mine, b"ok")]
    finally:
        a.close()
        obs.close()


def test_device_cannot_read_another_devices_topics(broker: Broker) -> None:
    a = client(broker, 0)
    b = client(broker, 1)
    obs = observer(broker)
    b_acks = f"microplate/v1/{broker.devices[1].site}/{broker.devices[1].device}/acks"
    b_runs = f"microplate/v1/{broker.devices[1].site}/{broker.devices[1].device}/runs"
    a_acks = f"microplate/v1/{broker.devices[0].site}/{broker.devices[0].device}/acks"
    try:
        # A wildcard that covers everyone, and the other device's topics named exactly.
        for topic in ("microplate/v1/#", b_acks, "$share/g/microplate/v1/+/+/runs"):
            a.subscribe(topic)
        assert b.subscribe(b_acks)[0].value < 0x80
        assert a.subscribe(a_acks)[0].value < 0x80
        obs.publish(b_acks, b"for b only")
        obs.publish(a_acks, b"for a")
        b.publish(b_runs, b"b's run")
        got_a = a.drain(1.5)
        got_b = b.drain(0.5)
        assert (b_acks, b"for b only") in got_b
        assert all(topic == a_acks for topic, _ in got_a), got_a
        assert (a_acks, b"for a") in got_a
    finally:
        for c in (a, b, obs):
            c.close()


def test_wrong_password_and_unknown_user_are_refused(broker: Broker) -> None:
    acc = broker.devices[0]
    for user, password in ((acc.username, "wrong"), ("nobody", "x"), (acc.username, "")):
        c = MqttProbe(broker.port, user, password)
        try:
            assert c.connect().is_failure
        finally:
            c.close()


def test_ingest_account_cannot_write_runs(broker: Broker) -> None:
    """The cloud side may only answer (acks, config); it cannot forge a device's runs."""
    obs = observer(broker)
    acc = broker.devices[0]
    try:
        rc = obs.publish(f"microplate/v1/{acc.site}/{acc.device}/runs", b"forged")
        assert rc.value == NOT_AUTHORIZED
    finally:
        obs.close()


def test_device_cannot_forge_the_clouds_answers_or_read_back_its_runs(broker: Broker) -> None:
    """Least privilege inside its own subtree: write runs/status, read acks/config only."""
    acc = broker.devices[0]
    base = f"microplate/v1/{acc.site}/{acc.device}"
    a = client(broker, 0)
    obs = observer(broker)
    try:
        assert a.publish(f"{base}/status", b"{}").value == 0
        assert a.publish(f"{base}/acks", b"forged ack").value == NOT_AUTHORIZED
        assert a.publish(f"{base}/config", b"forged config", retain=True).value == NOT_AUTHORIZED
        assert a.publish(f"{base}/other", b"x").value == NOT_AUTHORIZED
        # Subscribing to its runs is refused (or silently yields nothing); acks/config work.
        a.subscribe(f"{base}/runs")
        assert a.subscribe(f"{base}/acks")[0].value < 0x80
        assert a.subscribe(f"{base}/config")[0].value < 0x80
        assert a.publish(f"{base}/runs", b"mine").value == 0
        obs.publish(f"{base}/acks", b"ack for a")
        got = a.drain(1.0)
        assert (f"{base}/acks", b"ack for a") in got
        assert all(topic != f"{base}/runs" for topic, _ in got), got
        seen = obs.drain(0.5)
        assert (f"{base}/status", b"{}") in seen
        assert all(
            topic not in (f"{base}/acks", f"{base}/config") or payload == b"ack for a"
            for topic, payload in seen
        ), seen
    finally:
        a.close()
        obs.close()

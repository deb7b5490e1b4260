"""A small synchronous MQTT v5 client for tests: connect, subscribe, publish, collect."""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode


class MqttProbe:
    def __init__(self, port: int, username: str, password: str, client_id: str = "") -> None:
        self.port = port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: ReasonCode | None = None
        self._connected = threading.Event()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._suback_event = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._pubacks: dict[int, ReasonCode] = {}

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.connack = reason_code
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        with self._suback_event:
            self._subacks[mid] = list(reason_codes)
            self._suback_event.notify_all()

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError("no CONNACK")
        assert self.connack is not None
        return self.connack

    def subscribe(self, topic: str, timeout: float = 5.0) -> list[ReasonCode]:
        _, mid = self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + timeout
        with self._suback_event:
            while mid not in self._subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no SUBACK")
                self._suback_event.wait(left)
            return self._subacks[mid]

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._suback_event:
            self._pubacks[mid] = reason_code
            self._suback_event.notify_all()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and wait for the broker's PUBACK; returns its reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 5.0
        with self._suback_event:
            while info.mid not in self._pubacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no PUBACK")
                self._suback_event.wait(left)
            return self._pubacks.pop(info.mid)

    def drain(self, wait: float) -> list[tuple[str, bytes]]:
        out = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_many(
    port: int, username: str, password: str, topic: str, payloads: list[bytes]
) -> None:
    """Publish every payload at QoS 1 with a wide window and wait until the broker has them all."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{username}-bulk",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=60)
            if not info.is_published():
                raise TimeoutError("the broker did not acknowledge every message")
    finally:
        client.disconnect()
        client.loop_stop()

"""The appliance's MQTT connection: paho-mqtt 2.x, MQTT v5, one persistent session.

- `clean_start=False` with a session expiry interval: the broker keeps our subscriptions and
  queues the cloud's acks (and config) while we are away, even across a restart of this
  process, so an ack sent while the network was down is still delivered.
- The broker's last will sets the retained `status` topic to offline when we vanish.
- paho's own loop reconnects; before each wait our `Backoff` (capped, full jitter) sets the
  delay through `reconnect_delay_set`. The first connect is asynchronous so a missing broker
  at start never blocks the appliance.
- What went wrong is kept as a reason code (`edge.sync.reasons`): a refused CONNACK, a failed
  TCP/TLS connect (classified by the worker), a PUBACK or SUBACK with "not authorised" (the
  broker ACL, MQTT v5 says so instead of dropping silently).
- Callbacks run on paho's network thread: they only hand messages over (to a callback that
  must not block) and flip flags; the sync worker does the real work.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import SyncSettings
from edge.sync import reasons
from edge.sync.backoff import Backoff

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


class MqttLink:
    """One MQTT v5 client with a persistent session; thread-safe publish."""

    def __init__(
        self,
        settings: SyncSettings,
        *,
        client_id: str,
        subscriptions: list[str],
        on_message: MessageHandler,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[bool], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._connected = threading.Event()
        self._stopping = False  # a clean stop is not a lost connection
        self.generation = 0  # bumped at every successful connect
        self.last_error = ""
        # (code, detail) of the connection; `refused` holds a PUBACK/SUBACK refusal.
        self.state: tuple[str, str] = (reasons.CONNECTING, "")
        self.refused = ""
        self.connect_failures = 0  # bumped when a TCP/TLS connect fails (worker probes why)
        self.backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        password = settings.mqtt_password()
        if settings.username:
            client.username_pw_set(settings.username, password)
        if settings.tls:
            client.tls_set(
                ca_certs=str(settings.ca_cert_file) if settings.ca_cert_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        # paho sleeps for these delays, so fractions of a second work although it annotates int.
        # Both bounds are the first wait: _next_wait() sets each later one from our own jittered
        # back-off, which grows to reconnect_max_s.
        client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_min_s)  # type: ignore[arg-type]
        # paho's own queue holds what the broker has not PUBACKed; our window bounds it.
        client.max_inflight_messages_set(max(20, settings.window + 10))
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_connect_fail = self._handle_connect_fail
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        self.client = client

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def stop(self, final: tuple[str, bytes] | None = None) -> None:
        """Publish `final` (our offline status) if connected, then disconnect cleanly."""
        if final is not None and self.connected:
            info = self.client.publish(final[0], final[1], qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(timeout=3.0)
                except (RuntimeError, ValueError):
                    logger.debug("final status not confirmed before disconnect")
        # A clean DISCONNECT keeps the session (expiry interval) but suppresses the will.
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Queue one QoS 1 message; False when the client refused it (not connected)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.last_error = mqtt.error_string(info.rc)
            return False
        return True

    # -- paho callbacks (network thread) --------------------------------------------------
    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            # 0x86 bad user name or password, 0x87 not authorised, 0x85 client id not valid,
            # 0x8C bad authentication method: all mean these credentials are not accepted.
            code = (
                reasons.CREDENTIALS_REFUSED
                if reason_code.value in (0x85, 0x86, 0x87, 0x8C)
                else reasons.BROKER_REFUSED
            )
            self.state = (code, str(reason_code))
            logger.debug("MQTT connect refused: %s", reason_code)
            return
        # Subscribe every time: a broker that lost its state (SIGKILL before autosave)
        # answers session_present=False and has forgotten our subscriptions.
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        self.generation += 1
        self.last_error = ""
        self.state = (reasons.OK, "")
        self.backoff.reset()
        self._connected.set()
        logger.info(
            "MQTT connected to %s:%s (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )
        if self._on_connected is not None:
            self._on_connected(flags.session_present)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            self.last_error = f"disconnected: {reason_code}"
            self.state = (reasons.DISCONNECTED, str(reason_code))
            logger.warning("MQTT connection lost (%s); reconnecting with backoff", reason_code)
        self._next_wait()
        if self._on_disconnected is not None:
            self._on_disconnected()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # TCP/TLS failed (no CONNACK): the worker probes the network to say why.
        self.connect_failures += 1
        self.state = (reasons.CONNECTING, "")
        self._next_wait()

    def _next_wait(self) -> None:
        # Called before paho's next reconnect wait: make that wait ours (jittered, capped).
        if self._stopping:
            return
        delay = self.backoff.next()
        self.client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    def _handle_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            if not self.refused:
                logger.warning("the broker refused a publish: %s", reason_code)
            self.refused = f"publish: {reason_code}"
        elif self.refused.startswith("publish"):
            self.refused = ""

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            logger.warning("the broker refused a subscription: %s", ", ".join(failed))
            self.refused = f"subscribe: {failed[0]}"
        elif self.refused.startswith("subscribe"):
            self.refused = ""

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload))

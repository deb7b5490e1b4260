"""Tell devices about model assignments: a retained QoS 1 notice on each device's ``model`` topic.

Called after every assignment change (the API does it once the change is committed) and by
``microplate-cloud models notify`` (every 30 s by ``microplate-cloud-notify.timer``, or by hand):
a notice is marked sent only once the broker has acknowledged it, so a notice never sent is
sent on the next pass. Publishes with the ingest service's broker account, which the ACL lets
write ``…/model`` of every device; devices may only read their own.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.orm import Session, sessionmaker

from cloud.crud import ota
from cloud.models.base import utcnow
from cloud.settings import CloudSettings

logger = logging.getLogger(__name__)


class NotifyError(RuntimeError):
    """The broker could not be reached or refused the notices (they stay pending)."""


def _client(settings: CloudSettings) -> tuple[mqtt.Client, str, int]:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        # No dot: the device listener reserves dotted ids for device accounts.
        client_id=f"{settings.mqtt_ingest_username}-ota-{secrets.token_hex(4)}"[:64],
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    password = settings.mqtt_ingest_password
    client.username_pw_set(
        settings.mqtt_ingest_username,
        password.get_secret_value() if password is not None else None,
    )
    url = urlsplit(settings.mqtt_broker_url)
    if url.scheme == "mqtts":
        ca = settings.ca_cert_file
        client.tls_set(
            ca_certs=str(ca) if ca else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    elif url.scheme != "mqtt":
        raise NotifyError("mqtt_broker_url must start with mqtts:// (or mqtt:// for tests)")
    port = url.port or (8883 if url.scheme == "mqtts" else 1883)
    return client, url.hostname or "127.0.0.1", port


@contextmanager
def notifier(settings: CloudSettings, timeout_s: float) -> Iterator[mqtt.Client]:
    """A connected notifier client (the ingest's account), disconnected on leaving; NotifyError
    when the broker is unreachable or refuses it."""
    client, host, port = _client(settings)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
        if getattr(reason, "is_failure", False):
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise NotifyError(f"broker {host}:{port} unreachable: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            raise NotifyError(
                f"broker refused the notifier: {refused[0] if refused else 'timeout'}"
            )
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish_retained(
    client: mqtt.Client, topic: str, payload: bytes, timeout_s: float, what: str
) -> None:
    """Publish one retained QoS-1 message and wait for the broker's PUBACK (NotifyError if
    none comes); an empty payload deletes the topic's retained message."""
    info = client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(timeout_s)
    if not info.is_published():
        raise NotifyError(f"broker did not acknowledge the {what} on {topic}")


def publish_pending(
    settings: CloudSettings, sessions: sessionmaker[Session], *, timeout_s: float = 5.0
) -> int:
    """Withdraw the notices of superseded assignments, then publish every pending notice;
    return how many notices the broker acknowledged."""
    with sessions() as session:
        withdrawals = ota.pending_withdrawals(session)
        pending = ota.pending_notices(session)
    if not pending and not withdrawals:
        return 0
    sent = 0
    with notifier(settings, timeout_s) as client:
        for gone in withdrawals:  # an empty retained message deletes the retained notice
            publish_retained(client, gone.topic, b"", timeout_s, "withdrawal")
            with sessions() as session:
                ota.mark_withdrawn(session, gone)
                session.commit()
            logger.info("model notice withdrawn from %s", gone.topic)
        for item in pending:
            payload = item.notice.model_dump_json().encode()
            publish_retained(client, item.topic, payload, timeout_s, "notice")
            with sessions() as session:
                ota.mark_notified(session, item, at=utcnow())
                session.commit()
            sent += 1
            logger.info(
                "model notice %s %s (revision %s) sent to %s",
                item.notice.name,
                item.notice.version,
                item.notice.revision,
                item.topic,
            )
    return sent


def publish_quietly(settings: CloudSettings, sessions: sessionmaker[Session]) -> None:
    """For the API: a broker outage must not fail the admin's change (it stays pending)."""
    try:
        publish_pending(settings, sessions)
    except (NotifyError, ValueError) as exc:
        logger.warning("model notices left pending: %s", exc)

"""`microplate-cloud ingest`: MQTT (shared subscription) -> validate -> batch commit -> ack.

- Subscribes `$share/<group>/microplate/v1/+/+/runs` and `.../status` at QoS 1, so several
  workers split the load. MQTT v5, persistent session (`clean_start=False`, session expiry):
  messages that arrive while a worker restarts wait in the broker.
- `manual_ack`: the broker's PUBACK is sent only after the batch is committed, so a worker
  killed mid-batch loses nothing (the broker delivers again). A PUBACK is never sent on a newer
  connection than the message came on (packet ids are per connection).
- The device's `ack` (`core.wire.Ack`) is published only after the commit too. A message the
  cloud cannot accept is dead-lettered with its reason and, when it names a run, answered with
  a `rejected` ack so the appliance stops retrying it.
- Database down: the batch is held and retried with backoff. A database error caused by one
  message (not by the database being away) is isolated by bisecting the batch, and only that
  message is dead-lettered.
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.ingest.models import DEAD_LETTER_KEEP_BYTES, DeadLetter
from cloud.ingest.validate import (
    Accepted,
    Incoming,
    KnownDevice,
    Outcome,
    Refused,
    classify,
    sha256_hex,
)
from cloud.ingest.writer import write_batch, write_statuses
from cloud.settings import CloudSettings
from core.wire import Ack, Topics, encode_message

logger = logging.getLogger(__name__)


@dataclass
class IngestOptions:
    batch_size: int = 500
    batch_wait_s: float = 0.05
    share_group: str = "ingest"
    client_id: str | None = None  # stable per worker so its session survives a restart
    # How long the broker keeps a worker's session after it vanished without a clean stop.
    # Mosquitto keeps giving an offline session its share of the subscription's messages and
    # holds them for it, so a worker that never comes back strands its share for this long
    # (the appliances resend them after their ack timeout). Long enough for a restart.
    session_expiry_s: int = 120
    # On a clean stop: seconds to finish what the broker already gave this worker before
    # leaving (then the session is ended, so the broker sends nothing more its way).
    drain_on_stop_s: float = 10.0
    keepalive_s: int = 30
    device_cache_s: float = 5.0
    retry_max_s: float = 10.0
    # Unacknowledged messages the broker may push to this worker (MQTT v5 Receive Maximum).
    # Large on purpose: with a small quota the bench saw workers sit idle after a burst while
    # the broker still held messages for them (cause not established; suspected Mosquitto
    # 2.0.11 queue handling). Raise the broker's max_inflight_messages to match.
    receive_max: int = 10_000


@dataclass
class IngestStats:
    received: int = 0
    batches: int = 0
    runs_written: int = 0
    events_applied: int = 0
    dead_letters: int = 0
    acks_sent: int = 0
    db_retries: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.monotonic)


def _clean_reason(reason: str) -> str:
    # A reason may quote hostile input; the ack's reason field refuses control characters.
    out = "".join(ch if unicodedata.category(ch) != "Cc" or ch in "\n\t" else "?" for ch in reason)
    return out[:2000] or "rejected"


class IngestWorker:
    def __init__(
        self,
        settings: CloudSettings,
        options: IngestOptions | None = None,
        *,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or IngestOptions()
        self.engine = engine or make_engine(settings)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.stats = IngestStats()
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._connected = threading.Event()
        self._outstanding = 0  # received, not yet processed (acked or given up)
        self._outstanding_lock = threading.Lock()
        self._last_message = time.monotonic()
        self._devices: dict[tuple[str, str], tuple[float, KnownDevice | None]] = {}
        self.client = self._make_client()

    # -- MQTT ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        opts = self.options
        client_id = opts.client_id or f"{self.settings.mqtt_ingest_username}-{socket.gethostname()}"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id[:64],
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        password = self.settings.mqtt_ingest_password
        client.username_pw_set(
            self.settings.mqtt_ingest_username,
            password.get_secret_value() if password is not None else None,
        )
        url = urlsplit(self.settings.mqtt_broker_url)
        if url.scheme == "mqtts":
            ca = self.settings.ca_cert_file
            client.tls_set(
                ca_certs=str(ca) if ca else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        elif url.scheme != "mqtt":
            raise ValueError("mqtt_broker_url must start with mqtts:// (or mqtt:// for tests)")
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(1000)  # our own publishes (acks)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _subscriptions(self) -> list[str]:
        group = self.options.share_group
        return [f"$share/{group}/{Topics.subscription(leaf)}" for leaf in ("runs", "status")]

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason_code}"
            logger.warning("ingest: broker refused the connection: %s", reason_code)
            return
        client.subscribe([(topic, 1) for topic in self._subscriptions()])
        self._generation += 1
        self._connected.set()
        logger.info("ingest connected (session present: %s)", flags.session_present)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            logger.warning("ingest: broker connection lost (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._outstanding_lock:
            self._outstanding += 1
            self._last_message = time.monotonic()
        self._queue.put(
            Incoming(
                topic=msg.topic,
                payload=bytes(msg.payload),
                received_at=datetime.now(timezone.utc),
                mid=msg.mid,
                generation=self._generation,
            )
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        url = urlsplit(self.settings.mqtt_broker_url)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.options.session_expiry_s
        props.ReceiveMaximum = min(
            65535, max(2 * self.options.batch_size, self.options.receive_max)
        )
        self.client.connect_async(
            url.hostname or "127.0.0.1",
            url.port or (8883 if url.scheme == "mqtts" else 1883),
            keepalive=self.options.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._thread = threading.Thread(target=self._loop, name="ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Leave cleanly: stop taking new messages, finish the ones already here, then end the
        broker session so that its share of the subscription goes to the other workers.

        Without this, Mosquitto keeps a stopped worker's session (`session_expiry_s`) and goes
        on giving it its share of the messages, which then wait for a worker that is not
        coming back (seen as a stalled ingest when workers were scaled down).
        """
        if self._thread is not None and self._connected.is_set():
            self.client.unsubscribe(self._subscriptions())
            self._drain(self.options.drain_on_stop_s)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()

    def _drain(self, timeout: float) -> None:
        """Wait until every message received so far is processed and none came for a moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._outstanding_lock:
                idle = self._outstanding == 0 and time.monotonic() - self._last_message > 0.3
            if idle:
                return
            time.sleep(0.05)
        logger.warning("ingest: stopping with messages unprocessed; the appliances resend them")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def outstanding(self) -> int:
        """Messages received and not yet processed (the worker's own ingest backlog)."""
        with self._outstanding_lock:
            return self._outstanding

    # -- processing --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self.process(batch)
            except Exception:  # the worker survives anything one batch throws at it
                logger.exception(
                    "ingest: batch of %d failed; the broker will redeliver", len(batch)
                )
                self._stop.wait(1.0)
            finally:
                with self._outstanding_lock:
                    self._outstanding -= len(batch)

    def _next_batch(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.options.batch_wait_s
        while len(batch) < self.options.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def process(self, batch: Sequence[Incoming]) -> None:
        """Classify, commit (retrying while the database is away), then ack and PUBACK."""
        self.stats.received += len(batch)
        delay = 0.2
        while True:
            try:
                outcomes = [classify(item, self._lookup) for item in batch]
                accepted = [o for o in outcomes if isinstance(o, Accepted)]
                refused = [o for o in outcomes if isinstance(o, Refused)]
                refused_all = self._commit(accepted, refused)
                break
            except DBAPIError as exc:
                # The database is away or failing as a whole: hold the batch, never blame it.
                self.stats.db_retries += 1
                self.stats.last_error = f"database error: {type(exc.orig).__name__}"
                if isinstance(exc, (OperationalError, InterfaceError)):
                    # Includes deadlocks between workers (the transaction is simply retried).
                    logger.warning(
                        "ingest: database unavailable (%s); retrying in %.1f s",
                        type(exc.orig).__name__,
                        delay,
                    )
                else:
                    logger.exception("ingest: database error; retrying in %.1f s", delay)
            except Exception as exc:
                # A bug, not the messages' fault: keep the batch (nothing is acked) and retry,
                # loudly, rather than drop messages the broker believes are being handled.
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                logger.exception("ingest: batch failed; retrying in %.1f s", delay)
            if self._stop.wait(delay):
                return  # not acked: the broker delivers again to whoever runs next
            delay = min(self.options.retry_max_s, delay * 2)
        self.stats.batches += 1
        self.stats.dead_letters += len(refused_all)
        self._send_acks(outcomes, refused_all)
        for item in batch:
            if item.generation == self._generation:
                self.client.ack(item.mid, 1)

    def _commit(
        self, accepted: list[Accepted], refused: list[Refused], *, again: bool = False
    ) -> list[Refused]:
        """Write `accepted`, dead-letter `refused`; returns every refusal (incl. the writer's)."""
        try:
            now = datetime.now(timezone.utc)
            result = None
            extra: list[Refused] = []
            if accepted:
                with session_scope(self.sessions) as session:
                    result = write_batch(session, accepted, now=now)
                extra = result.refused
            # Second, short transaction: device rows and dead letters. If it fails, the retry
            # repeats the results too, harmlessly (idempotent), and nothing is written twice.
            with session_scope(self.sessions) as session:
                status_result = write_statuses(session, accepted, now=now)
                extra = [*extra, *status_result.refused]
                self._dead_letter(session, [*refused, *extra], now=now)
        except (IntegrityError, DataError) as exc:
            # A unique violation is most often another worker having just written the same
            # run (a redelivered duplicate): the batch is tried once more as a whole, when the
            # run is found stored and is a duplicate. Anything left is one message's values:
            # isolate it by bisecting.
            if accepted and not again and isinstance(exc, IntegrityError):
                return self._commit(accepted, refused, again=True)
            if len(accepted) > 1:
                half = len(accepted) // 2
                return self._commit(accepted[:half], refused, again=True) + self._commit(
                    accepted[half:], [], again=True
                )
            reason = f"database refused the message: {type(exc.orig).__name__}"
            topic = accepted[0].incoming.topic if accepted else ""
            logger.warning("ingest: %s (%s)", reason, topic)
            bad = [self._refuse(a, reason) for a in accepted]
            return self._commit([], [*refused, *bad])
        if result is not None:
            self.stats.runs_written += result.runs_written
            self.stats.events_applied += result.events_applied
        return [*refused, *extra]

    @staticmethod
    def _refuse(item: Accepted, reason: str) -> Refused:
        msg = item.message
        return Refused(
            item.incoming,
            reason,
            item.device.site,
            item.device.slug,
            getattr(msg, "run_id", None),
            getattr(msg, "edit", None),
        )

    def _dead_letter(self, session: Session, refused: Sequence[Refused], *, now: datetime) -> None:
        if not refused:
            return
        rows = [
            {
                "received_at": r.incoming.received_at,
                "topic": r.incoming.topic[:512],
                "site": r.site,
                "device": r.device,
                "run_id": r.run_id,
                "edit": r.edit,
                "reason": r.reason,
                "payload": r.incoming.payload[:DEAD_LETTER_KEEP_BYTES],
                "payload_bytes": len(r.incoming.payload),
                "payload_sha256": sha256_hex(r.incoming.payload),
            }
            for r in refused
        ]
        session.execute(insert(DeadLetter), rows)

    def _send_acks(self, outcomes: Sequence[Outcome], refused: Sequence[Refused]) -> None:
        # Keyed by (site, device, run_id, edit): a duplicate of a refused message is refused too.
        rejected: dict[tuple[str, str, str, int], str] = {}
        for r in refused:
            if r.run_id is not None and r.edit is not None and r.device is not None:
                rejected.setdefault((r.site or "", r.device, str(r.run_id), r.edit), r.reason)
        replies: dict[tuple[str, str, str, int], Ack] = {}
        for key, reason in rejected.items():
            replies[key] = Ack(
                run_id=key[2], edit=key[3], status="rejected", reason=_clean_reason(reason)
            )
        for outcome in outcomes:
            if not isinstance(outcome, Accepted):
                continue
            run_id = getattr(outcome.message, "run_id", None)
            edit = getattr(outcome.message, "edit", None)
            if run_id is None or edit is None:
                continue
            key = (outcome.device.site, outcome.device.slug, str(run_id), edit)
            if key not in replies:
                replies[key] = Ack(run_id=run_id, edit=edit, status="accepted")
        for (site, device, _run, _edit), ack in replies.items():
            try:
                topic = Topics(site, device).acks
            except ValueError:
                continue
            self.client.publish(topic, encode_message(ack), qos=1)
            self.stats.acks_sent += 1

    def _lookup(self, site: str, device: str) -> KnownDevice | None:
        now = time.monotonic()
        cached = self._devices.get((site, device))
        if cached is not None and now - cached[0] < self.options.device_cache_s:
            return cached[1]
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT d.id, d.site_id FROM devices d JOIN sites s ON s.id = d.site_id "
                    "WHERE s.slug = :site AND d.slug = :device AND d.status = 'active'"
                ),
                {"site": site, "device": device},
            ).first()
        known = KnownDevice(row[0], row[1], site, device) if row is not None else None
        self._devices[(site, device)] = (now, known)
        return known

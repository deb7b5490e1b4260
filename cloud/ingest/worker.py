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
- Database down (connection lost, server gone): the batch is held and retried with backoff.
  Anything else a batch raises, a database error caused by a message's values or any other
  exception (once, a finite but absurd titre overflowed the statistics), is blamed on the
  messages: the batch is bisected and only the message that still fails alone is
  dead-lettered (whole payload kept) and acked, so one poison message never stalls the others.
- Memory is bounded: the broker may push at most `receive_max` unacknowledged messages, none
  larger than `max_packet_bytes`; the queue between the network thread and the batcher holds
  at most `queue_bytes` (past that the network thread waits: TCP back-pressure to the broker)
  and a batch at most `batch_bytes`.
- QoS 0 messages are processed but never PUBACKed (they have no packet id to answer).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PendingRollbackError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from sqlalchemy.orm import Session, sessionmaker

from cloud.crud.pending import purge_pending_events
from cloud.db import make_engine, make_sessionmaker, session_scope
from cloud.ingest.models import DeadLetter
from cloud.ingest.options import IngestOptions, IngestStats, default_client_id
from cloud.ingest.replies import dead_letter_rows, device_replies
from cloud.ingest.validate import (
    Accepted,
    Incoming,
    KnownDevice,
    Outcome,
    Refused,
    classify,
)
from cloud.ingest.writer import write_batch, write_statuses
from cloud.mqtt_auth import ingest_share_group
from cloud.settings import CloudSettings
from core.wire import Topics, encode_message

logger = logging.getLogger(__name__)


# The database being away, not a message's fault: the batch is held, never dead-lettered.
_OUTAGE = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PendingRollbackError,
    SQLAlchemyTimeout,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def _cause_name(exc: BaseException | None) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


class DatabaseAway(Exception):
    """The database is unreachable or the connection broke: hold the batch, blame nobody."""


def _outage(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    if str(getattr(orig, "sqlstate", "") or "").startswith("54"):
        return False  # program_limit_exceeded: an OperationalError caused by a message's values
    if isinstance(exc, (_OUTAGE, DatabaseAway)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # The bulk path wraps raw driver errors; look at what it wrapped.
    return isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No automatic cyclic GC while a batch is processed (nestable, thread-safe).

    A batch holds some 300,000 container objects (96 wells a run, 500 runs) until its commit,
    all freed by reference counting; with the collector on, every 50,000 allocations a young
    collection walked the objects alive (the batch so far) and promoted them, a tenth of the
    worker's CPU per run. Collection resumes after the batch: by then reference counting has
    freed the batch (which also lowers the collector's allocation count), and cyclic garbage
    made meanwhile is at most one batch's worth.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


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
        self._queued_bytes = 0
        self._queue_room = threading.Condition()
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
        client_id = opts.client_id or default_client_id(self.settings.mqtt_ingest_username)
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
        if group is None:
            password = self.settings.mqtt_ingest_password
            group = ingest_share_group(password.get_secret_value() if password else "")
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
        size = len(msg.payload)
        with self._queue_room:
            # Back-pressure: while the queue is full this (network) thread waits, so the
            # socket is not read and the broker keeps the rest.
            while self._queued_bytes > 0 and self._queued_bytes + size > self.options.queue_bytes:
                if self._stop.is_set():
                    return  # not acked: the broker delivers it again
                self._queue_room.wait(0.5)
            self._queued_bytes += size
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
                qos=msg.qos,
            )
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        url = urlsplit(self.settings.mqtt_broker_url)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.options.session_expiry_s
        props.ReceiveMaximum = min(65535, max(20, self.options.receive_max))
        props.MaximumPacketSize = self.options.max_packet_bytes
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
        next_purge = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.options.purge_every_s
                self._purge()
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
                with self._queue_room:
                    self._queued_bytes -= sum(len(i.payload) for i in batch)
                    self._queue_room.notify_all()

    def _next_batch(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        size = len(first.payload)
        deadline = time.monotonic() + self.options.batch_wait_s
        while len(batch) < self.options.batch_size and size < self.options.batch_bytes:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            size += len(batch[-1].payload)
        return batch

    def process(self, batch: Sequence[Incoming]) -> None:
        """Classify, commit (retrying while the database is away), then ack and PUBACK."""
        self.stats.received += len(batch)
        delay = 0.2
        while True:
            # The parsed messages live only inside _attempt: freed before collection resumes.
            with _gc_paused():
                if self._attempt(batch, delay):
                    return
            if self._stop.wait(delay):
                return  # not acked: the broker delivers again to whoever runs next
            delay = min(self.options.retry_max_s, delay * 2)

    def _attempt(self, batch: Sequence[Incoming], delay: float) -> bool:
        """One try at `process`; False when the database is away (hold the batch)."""
        try:
            outcomes = [self._classify(item) for item in batch]
            accepted = [o for o in outcomes if isinstance(o, Accepted)]
            refused = [o for o in outcomes if isinstance(o, Refused)]
            refused_all = self._commit(accepted, refused)
        except DatabaseAway as away:
            # The database is away as a whole (includes deadlocks between workers: the
            # transaction is simply retried): hold the batch, never blame it.
            cause = _cause_name(away.__cause__)
            self.stats.db_retries += 1
            self.stats.last_error = f"database unavailable: {cause}"
            logger.warning("ingest: database unavailable (%s); retrying in %.1f s", cause, delay)
            return False
        self.stats.batches += 1
        self.stats.dead_letters += len(refused_all)
        self._send_acks(outcomes, refused_all)
        for item in batch:
            # QoS 0 has no packet id: answering "0" is a protocol error that drops the link.
            if item.qos > 0 and item.generation == self._generation:
                self.client.ack(item.mid, item.qos)
        return True

    def _purge(self) -> None:
        try:
            with session_scope(self.sessions) as session:
                purge_pending_events(session, now=datetime.now(timezone.utc))
        except Exception as exc:  # noqa: BLE001  housekeeping never stops the worker
            logger.warning("ingest: pending events not purged (%s)", _cause_name(exc))

    def _classify(self, item: Incoming) -> Outcome:
        try:
            return classify(item, self._lookup)
        except Exception as exc:
            if _outage(exc):
                raise DatabaseAway from exc
            logger.warning("ingest: message on %s could not be checked: %r", item.topic[:200], exc)
            return Refused(item, f"could not be processed: {type(exc).__name__}", keep_all=True)

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
        except DatabaseAway:
            raise
        except Exception as exc:
            if _outage(exc):
                raise DatabaseAway from exc
            # A unique violation is most often another worker having just written the same
            # run (a redelivered duplicate): the batch is tried once more as a whole, when the
            # run is found stored and is a duplicate. Anything else (a value the database
            # refuses, an exception from the code that pools or writes) is one message's
            # doing: isolate it by bisecting.
            if accepted and not again and isinstance(exc, IntegrityError):
                return self._commit(accepted, refused, again=True)
            if len(accepted) > 1:
                half = len(accepted) // 2
                return self._commit(accepted[:half], refused, again=True) + self._commit(
                    accepted[half:], [], again=True
                )
            if not accepted:
                return self._dead_letter_alone(refused, exc)
            if isinstance(exc, (IntegrityError, DataError)):
                reason = f"database refused the message: {type(exc.orig).__name__}"
            else:
                reason = f"could not be processed: {type(exc).__name__}"
            logger.warning("ingest: %s (%s): %r", reason, accepted[0].incoming.topic[:200], exc)
            bad = [self._refuse(a, reason) for a in accepted]
            return self._commit([], [*refused, *bad])
        if result is not None:
            self.stats.runs_written += result.runs_written
            self.stats.events_applied += result.events_applied
        return [*refused, *extra]

    def _dead_letter_alone(self, refused: list[Refused], exc: Exception) -> list[Refused]:
        """Dead letters alone failed to store: bisect them; one that still fails is stored
        bare (topic and reason only), so no stored row can hold up the others."""
        if len(refused) > 1:
            half = len(refused) // 2
            return self._commit([], refused[:half]) + self._commit([], refused[half:])
        if not refused or "(stored bare:" in refused[0].reason:
            raise exc
        r = refused[0]
        bare = Refused(r.incoming, f"{r.reason[:200]} (stored bare: {type(exc).__name__})")
        return self._commit([], [bare])

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
            keep_all=True,
        )

    def _dead_letter(self, session: Session, refused: Sequence[Refused], *, now: datetime) -> None:
        if refused:
            session.execute(insert(DeadLetter), dead_letter_rows(refused))

    def _send_acks(self, outcomes: Sequence[Outcome], refused: Sequence[Refused]) -> None:
        for (site, device, _run, _edit), ack in device_replies(outcomes, refused).items():
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

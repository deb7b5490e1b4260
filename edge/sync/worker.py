"""The sync worker: drains the outbox over MQTT and settles entries on the cloud's acks.

One thread does the work (`while not stop.wait(...)`-style, woken early by acks, connects and
`notify()`); paho's network thread only hands messages over. Per round:

1. settle acks: `accepted` -> `outbox.mark_delivered` (one transaction per round),
   `rejected` -> `outbox.mark_rejected` (kept for a person, never sent again);
2. after a (re)connect, everything unacknowledged goes out again (the cloud is idempotent);
3. resend entries whose ack is overdue, then fill the window from `outbox.pending`;
4. publish the retained status (online, version, model, backlog, oldest age, disk) every
   `status_interval_s` and a `sync.status` event for the UI when something changed.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from core.wire import (
    Ack,
    DesiredConfig,
    DeviceStatus,
    Topics,
    WireError,
    encode_message,
    parse_message,
)
from edge import __version__, outbox
from edge.store import Store, StoreError
from edge.sync.config import ConfigApplier
from edge.sync.link import MqttLink
from edge.sync.settings import SyncSettings
from edge.sync.uploader import ImageUploader
from edge.sync.window import Window

logger = logging.getLogger(__name__)


class EventSink(Protocol):
    def publish(self, type: str, payload: dict[str, Any]) -> None: ...


StatusInfo = Callable[[], dict[str, Any]]


class SyncWorker:
    """Outbox -> MQTT (QoS 1) -> cloud ack -> delivered. Start once, stop once."""

    def __init__(
        self,
        settings: SyncSettings,
        *,
        store: Store,
        site_id: str,
        device_id: str,
        events: EventSink | None = None,
        status_info: StatusInfo | None = None,
        config_applier: ConfigApplier | None = None,
        uploader: ImageUploader | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.topics = Topics(site_id, device_id)
        self.site_id, self.device_id = site_id, device_id
        self.events = events
        self._status_info = status_info or (lambda: {})
        self.config_applier = config_applier
        self.uploader = uploader
        self._data_dir = data_dir or store.path.parent
        self.window = Window(settings.window, settings.ack_timeout_s, settings.ack_timeout_max_s)
        self._acks: deque[Ack] = deque()
        self._configs: deque[DesiredConfig] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._generation_seen = 0
        self._last_status_at = 0.0
        self._last_event: dict[str, Any] | None = None
        self.delivered_total = 0
        self.rejected_total = 0
        self.published_total = 0
        self.link = MqttLink(
            settings,
            client_id=settings.client_id or settings.username or f"{site_id}.{device_id}",
            subscriptions=[self.topics.acks, self.topics.config],
            on_message=self._on_message,
            will=(self.topics.status, encode_message(self._status(online=False))),
            on_connected=lambda _present: self._wake.set(),
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self.uploader is not None:
            self.uploader.start()
        self.link.start()
        self._thread = threading.Thread(target=self._loop, name="sync", daemon=True)
        self._thread.start()
        logger.info("sync started: %s -> %s", self.topics.base, self.settings.broker_url)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        final = None
        try:
            final = (self.topics.status, encode_message(self._status(online=False)))
        except (WireError, OSError):
            logger.debug("no final status to publish", exc_info=True)
        self.link.stop(final)
        if self.uploader is not None:
            self.uploader.stop()

    def notify(self) -> None:
        """Something was added to the outbox: look now instead of at the next poll."""
        self._wake.set()

    # -- MQTT messages (paho's thread: hand over, never block) ---------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = parse_message(payload)
        except WireError as exc:
            logger.warning("ignoring a malformed message on %s: %s", topic, exc)
            return
        if topic == self.topics.acks and isinstance(message, Ack):
            self._acks.append(message)
        elif topic == self.topics.config and isinstance(message, DesiredConfig):
            self._configs.append(message)
        else:
            logger.warning("ignoring a %s message on %s", type(message).__name__, topic)
            return
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.round()
            except Exception:  # the worker survives a failed round and retries
                logger.exception("sync round failed; retrying")
                self._stop.wait(1.0)

    def round(self) -> None:
        """One pass: settle acks, apply config, (re)send, report. Called by the loop."""
        self._settle_acks()
        self._apply_configs()
        now = time.monotonic()
        if self.link.generation != self._generation_seen:
            self._generation_seen = self.link.generation
            self.window.reset()
            self._last_status_at = 0.0
        if self.link.connected:
            self._resend_overdue(now)
            self._fill(now)
            if now - self._last_status_at >= self.settings.status_interval_s:
                self._publish_status()
                self._last_status_at = now
        self._emit_event()

    def _settle_acks(self) -> None:
        delivered: list[int] = []
        while self._acks:
            ack = self._acks.popleft()
            ids = self.window.acked(str(ack.run_id), ack.edit)
            if not ids:
                ids = self._entries_for(str(ack.run_id), ack.edit)
            if ack.status == "accepted":
                delivered.extend(ids)
            else:
                for entry_id in ids:
                    outbox.mark_rejected(self.store, entry_id, ack.reason or "rejected")
                    self.rejected_total += 1
        if delivered:
            self.delivered_total += outbox.mark_delivered(self.store, delivered)

    def _entries_for(self, run_id: str, edit: int) -> list[int]:
        """Undelivered entries for an ack that is not in the window (sent before a restart)."""
        rows = (
            self.store.read()
            .execute(
                "SELECT id, payload FROM outbox WHERE run_id = ? AND delivered_at IS NULL "
                "AND rejected_reason IS NULL",
                [run_id],
            )
            .fetchall()
        )
        ids = []
        for entry_id, payload in rows:
            try:
                if int(json.loads(payload).get("edit", 0)) == edit:
                    ids.append(int(entry_id))
            except (ValueError, TypeError, AttributeError):
                continue
        return ids

    def _apply_configs(self) -> None:
        while self._configs:
            config = self._configs.popleft()
            if self.config_applier is None:
                logger.info("config revision %s received; no applier configured", config.revision)
                continue
            self.config_applier.apply(config)

    def _resend_overdue(self, now: float) -> None:
        late = self.window.expired(now)
        if not late:
            return
        by_id = {e.id: e for e in outbox.pending(self.store, limit=self.window.size * 2)}
        for flight in late:
            entry = by_id.get(flight.entry_id)
            if entry is None:  # delivered or rejected meanwhile
                self.window.drop(flight.entry_id)
                continue
            outbox.mark_attempt(
                self.store,
                entry.id,
                f"no ack within {self.window.timeout_for(flight.attempts):.0f} s; sent again",
            )
            if not self._publish_entry(entry, now):
                return

    def _fill(self, now: float) -> None:
        if self.window.free <= 0:
            return
        pending = outbox.pending(self.store, limit=self.window.size * 2)
        waiting: set[int] = set()
        if self.uploader is not None:
            waiting = {e.id for e in pending if e.kind == "run" and not self._images_ready(e)}
        for entry in self.window.select(pending, skip=waiting):
            if not self._publish_entry(entry, now):
                return

    def _images_ready(self, entry: outbox.OutboxEntry) -> bool:
        assert self.uploader is not None
        if entry.payload.get("images"):
            return True
        refs = self.uploader.refs_for(entry.run_id, entry.created_at)
        if refs is None:
            return False
        entry.payload["images"] = refs
        return True

    def _publish_entry(self, entry: outbox.OutboxEntry, now: float) -> bool:
        payload = json.dumps(entry.payload, separators=(",", ":")).encode("utf-8")
        edit = int(entry.payload.get("edit", 0))
        if not self.link.publish(self.topics.runs, payload):
            logger.info("publish refused (%s); waiting for the connection", self.link.last_error)
            return False
        self.window.sent(entry.id, entry.run_id, edit, now)
        self.published_total += 1
        return True

    # -- status ---------------------------------------------------------------------------
    def _status(self, *, online: bool) -> DeviceStatus:
        info = self._status_info()
        try:
            count, oldest = outbox.backlog(self.store)
        except (StoreError, OSError, sqlite3.Error):
            count, oldest = 0, None  # the will is built before the store may be open
        disk_free = info.get("disk_free_bytes")
        if disk_free is None:
            disk_free = shutil.disk_usage(self._data_dir).free
        return DeviceStatus(
            device_id=self.device_id,
            site_id=self.site_id,
            online=online,
            version=str(info.get("version") or __version__)[:128],
            model=str(info.get("model") or "")[:128],
            backend=str(info.get("backend") or "")[:128],
            backlog=count,
            oldest_unsent_age_s=oldest,
            disk_free_bytes=int(disk_free),
            at=datetime.now(timezone.utc),
        )

    def _publish_status(self) -> None:
        status = self._status(online=True)
        self.link.publish(self.topics.status, encode_message(status), retain=True)

    def snapshot(self) -> dict[str, Any]:
        """What the UI shows (also sent as the `sync.status` event)."""
        count, oldest = outbox.backlog(self.store)
        return {
            "connected": self.link.connected,
            "broker": f"{self.settings.host}:{self.settings.port}",
            "backlog": count,
            "oldest_age_s": None if oldest is None else round(oldest, 1),
            "in_flight": len(self.window),
            "rejected": outbox.rejected_count(self.store),
            "last_error": self.link.last_error,
            "config_revision": (
                self.config_applier.revision if self.config_applier is not None else None
            ),
        }

    def _emit_event(self) -> None:
        if self.events is None:
            return
        snap = self.snapshot()
        # Age ticks every round: compare without it so the UI is not flooded.
        key = {k: v for k, v in snap.items() if k != "oldest_age_s"}
        if key != self._last_event:
            self._last_event = key
            self.events.publish("sync.status", snap)

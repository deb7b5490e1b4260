"""The sync worker: drains the outbox over MQTT and settles entries on the cloud's acks.

One thread does the work (`while not stop.wait(...)`-style, woken early by acks, connects and
`notify()`); paho's network thread only hands messages over. Per round:

1. settle acks: `accepted` -> `outbox.mark_delivered` (one transaction per round),
   `rejected` -> `outbox.mark_rejected` (kept for a person, never sent again);
2. after a (re)connect, everything unacknowledged goes out again (the cloud is idempotent);
3. resend entries whose ack is overdue, then fill the window (`edge.db.outbox`);
4. publish the retained status (online, version, model, backlog, oldest age, disk) every
   `status_interval_s` and a `sync.status` event for the UI when something changed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.enrollment import identity_problem
from core.wire import (
    Ack,
    DesiredConfig,
    DeviceStatus,
    Topics,
    WireError,
    encode_message,
    parse_message,
)
from edge import __version__
from edge.config import SyncSettings
from edge.sync import reasons
from edge.sync.config import ConfigApplier
from edge.sync.link import MqttLink
from edge.sync.uploader import ImageUploader
from edge.sync.window import Window

if TYPE_CHECKING:
    from edge.ports import OutboxHead, OutboxPort

logger = logging.getLogger(__name__)


class EventSink(Protocol):
    def publish(self, type: str, payload: dict[str, Any]) -> object: ...


StatusInfo = Callable[[], dict[str, Any]]


def only_uploaded(text: str, refs: list[dict[str, Any]]) -> str:
    """A run message whose `images` are `refs`, the images uploaded (issue 16 point 6). The
    outbox copy names all three images for the appliance's own checks; the cloud lists what a
    message names, so an image never uploaded (the raw one, or all of them when uploads are
    off or gave up) must not be named. Events carry no images and pass unchanged."""
    if '"images":' not in text or (not refs and '"images":[]' in text):
        return text
    payload = json.loads(text)
    payload["images"] = refs
    return json.dumps(payload, separators=(",", ":"))


class SyncWorker:
    """Outbox -> MQTT (QoS 1) -> cloud ack -> delivered. Start once, stop once."""

    def __init__(
        self,
        settings: SyncSettings,
        *,
        outbox: OutboxPort,
        site_id: str,
        device_id: str,
        events: EventSink | None = None,
        status_info: StatusInfo | None = None,
        config_applier: ConfigApplier | None = None,
        uploader: ImageUploader | None = None,
        data_dir: Path | None = None,
        on_model: Callable[[bytes], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_model = on_model
        self.outbox = outbox
        self._topics = Topics(site_id, device_id)
        self.site_id, self.device_id = site_id, device_id
        self.events = events
        self._status_info = status_info or (lambda: {})
        self._config_applier = config_applier
        self.uploader = uploader
        self._data_dir = data_dir or outbox.folder
        self._window = Window(settings.window, settings.ack_timeout_s, settings.ack_timeout_max_s)
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
        self.resent_total = 0
        self._with_images: dict[int, str] = {}
        self._last_event_at = 0.0
        self._identity_problem = identity_problem(
            site_id=site_id, device_id=device_id, username=settings.username
        )
        self.reason_log = reasons.ReasonLog()
        self._probed: tuple[int, tuple[str, str]] = (0, (reasons.CONNECTING, ""))
        self._revoked: tuple[tuple[str, str], bool] | None = None
        self.link = MqttLink(
            settings,
            client_id=settings.client_id or settings.username or f"{site_id}.{device_id}",
            subscriptions=[self._topics.acks, self._topics.config]
            + ([self._topics.model] if on_model is not None else []),
            on_message=self._on_message,
            will=(self._topics.status, encode_message(self._status(online=False))),
            on_connected=lambda _present: self._wake.set(),
        )

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self.uploader is not None:
            self.uploader.start()
        if self._identity_problem is not None:
            self.reason_log.update(self.reason())  # said once at start, before any retry
        self.link.start()
        self._thread = threading.Thread(target=self._loop, name="sync", daemon=True)
        self._thread.start()
        logger.info("sync started: %s -> %s", self._topics.base, self.settings.broker_url)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        final = None
        try:
            final = (self._topics.status, encode_message(self._status(online=False)))
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
        if topic == self._topics.model and self._on_model is not None:
            self._on_model(payload)  # a core.ota.ModelNotice, or empty: withdrawn
            return
        try:
            message = parse_message(payload)
        except WireError as exc:
            logger.warning("ignoring a malformed message on %s: %s", topic, exc)
            return
        if topic == self._topics.acks and isinstance(message, Ack):
            self._acks.append(message)
        elif topic == self._topics.config and isinstance(message, DesiredConfig):
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
            self._window.reset()
            self._last_status_at = 0.0
        if self.link.connected:
            self._resend_overdue(now)
            self._fill(now)
            if now - self._last_status_at >= self.settings.status_interval_s:
                self._publish_status()
                self._last_status_at = now
        self.reason_log.update(self.reason())
        self._emit_event()

    def _settle_acks(self) -> None:
        delivered: list[int] = []
        while self._acks:
            ack = self._acks.popleft()
            ids = self._window.acked(str(ack.run_id), ack.edit)
            if not ids:
                ids = self.outbox.unsettled_for(str(ack.run_id), ack.edit)
            for entry_id in ids:
                self._with_images.pop(entry_id, None)
            if ack.status == "accepted":
                delivered.extend(ids)
            else:
                for entry_id in ids:
                    self.outbox.mark_rejected(entry_id, ack.reason or "rejected")
                    self.rejected_total += 1
        if delivered:
            self.delivered_total += self.outbox.mark_delivered(delivered)

    def _apply_configs(self) -> None:
        while self._configs:
            config = self._configs.popleft()
            if self._config_applier is None:
                logger.info("config revision %s received; no applier configured", config.revision)
                continue
            self._config_applier.apply(config)

    def _resend_overdue(self, now: float) -> None:
        late = self._window.expired(now)
        if not late:
            return
        texts = self.outbox.payloads([f.entry_id for f in late])
        for flight in late:
            text = self._wire_text(flight.entry_id, texts.get(flight.entry_id))
            if text is None:  # gone (retention): nothing left to send
                self._window.drop(flight.entry_id)
                self._with_images.pop(flight.entry_id, None)
                continue
            if not self.link.publish(self._topics.runs, text.encode("utf-8")):
                return
            self._window.sent(flight.entry_id, flight.run_id, flight.edit, now)
            self.published_total += 1
            self.resent_total += 1
        timeout = self._window.timeout_for(max(f.attempts for f in late) - 1)
        self.outbox.note_resent([f.entry_id for f in late], f"no ack within {timeout:.0f} s")
        logger.info("%d entries without an ack were sent again", len(late))

    def _fill(self, now: float) -> None:
        # Refill in chunks, not one slot per ack: each refill reads the outbox.
        if self._window.free < max(1, self._window.size // 4) and len(self._window) > 0:
            return
        pending = self.outbox.heads(limit=self._window.size * 2)
        waiting: set[int] = set()
        if self.uploader is not None:
            waiting = {h.id for h in pending if h.kind == "run" and not self._images_ready(h)}
        chosen = self._window.select(pending, skip=waiting)
        texts = self.outbox.payloads([h.id for h in chosen])
        for head in chosen:
            text = self._wire_text(head.id, texts.get(head.id))
            if text is None:
                continue
            if not self.link.publish(self._topics.runs, text.encode("utf-8")):
                logger.info(
                    "publish refused (%s); waiting for the connection", self.link.last_error
                )
                return
            self._window.sent(head.id, head.run_id, head.edit, now)
            self.published_total += 1

    def _images_ready(self, head: OutboxHead) -> bool:
        """True when the run may go: its images are uploaded (refs added) or given up."""
        assert self.uploader is not None
        if head.id in self._with_images:
            return True
        refs = self.uploader.refs_for(head.run_id, head.created_at)
        if refs is None:
            return False
        text = self.outbox.payloads([head.id]).get(head.id)
        if text is None:
            return False
        self._with_images[head.id] = only_uploaded(text, refs)
        return True

    def _wire_text(self, entry_id: int, text: str | None) -> str | None:
        """What is sent for an outbox entry: a run names only the images the cloud holds (kept
        until the entry is settled, so a resend says the same)."""
        if entry_id in self._with_images:
            return self._with_images[entry_id]
        if text is None or self.uploader is not None:
            return text
        return only_uploaded(text, [])  # nothing is uploaded without an uploader

    # -- why it does not work ----------------------------------------------------------------
    def reason(self) -> reasons.Reason:
        """The one reason shown for sync now: identity first, then the connection, then what
        the broker or the API refused."""
        settings = self.settings
        if self._identity_problem is not None:
            return reasons.reason(reasons.IDENTITY_MISMATCH, settings, self._identity_problem)
        code, detail = self.link.state
        if code == reasons.CONNECTING and self.link.connect_failures:
            code, detail = self._probe()
        elif code == reasons.CREDENTIALS_REFUSED and self._device_revoked((code, detail)):
            code = reasons.DEVICE_REVOKED
        if code != reasons.OK:
            return reasons.reason(code, settings, detail)
        if self.link.refused:
            return reasons.reason(reasons.NOT_AUTHORISED, settings, self.link.refused)
        if self.uploader is not None and self.uploader.refused:
            return reasons.reason(reasons.UPLOAD_UNAUTHORISED, settings, self.uploader.refused)
        return reasons.reason(reasons.OK, settings)

    def _probe(self) -> tuple[str, str]:
        # Once per failed connect attempt, not per round: the probe opens a connection.
        failures = self.link.connect_failures
        if self._probed[0] != failures:
            self._probed = (failures, reasons.probe(self.settings))
        return self._probed[1]

    def _device_revoked(self, state: tuple[str, str]) -> bool:
        if self.uploader is None:
            return False
        if self._revoked is None or self._revoked[0] != state:
            self._revoked = (state, self.uploader.token_refused() is True)
        return self._revoked[1]

    # -- status ---------------------------------------------------------------------------
    def _status(self, *, online: bool) -> DeviceStatus:
        info = self._status_info()
        current = self.reason_log.current
        count, oldest = self.outbox.backlog_if_open()  # the will is built before the store opens
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
            sync_reason=current.code if current else None,
            sync_message=current.message[:1000] if current else None,
        )

    def _publish_status(self) -> None:
        status = self._status(online=True)
        self.link.publish(self._topics.status, encode_message(status), retain=True)

    def snapshot(self) -> dict[str, Any]:
        """What the UI shows (also sent as the `sync.status` event)."""
        count, oldest = self.outbox.backlog()
        current = self.reason_log.current or self.reason()
        return {
            "connected": self.link.connected,
            "broker": f"{self.settings.host}:{self.settings.port}",
            "backlog": count,
            "oldest_age_s": None if oldest is None else round(oldest, 1),
            "in_flight": len(self._window),
            "rejected": self.outbox.rejected_count(),
            "last_error": self.link.last_error,
            "reason": current.code,
            "message": current.message,
            "config_revision": (
                self._config_applier.revision if self._config_applier is not None else None
            ),
            # The cloud's raw-photo choice in force (None: the local upload_images rules).
            "upload_raw": (
                self._config_applier.upload_raw if self._config_applier is not None else None
            ),
        }

    def _emit_event(self) -> None:
        now = time.monotonic()
        if self.events is None or now - self._last_event_at < 1.0:
            return
        self._last_event_at = now
        snap = self.snapshot()
        # Age ticks every round: compare without it so the UI is not flooded.
        key = {k: v for k, v in snap.items() if k != "oldest_age_s"}
        if key != self._last_event:
            self._last_event = key
            self.events.publish("sync.status", snap)

"""Push new results and device changes to dashboards, across API processes.

The data-access layer calls `notify(session, event)` inside its transaction; that issues
Postgres `pg_notify`, which is delivered only if and when the transaction commits. Every API
process runs one LISTEN thread that hands events to its in-process `Broadcaster`, which fans
them out to the WebSocket subscribers allowed to see the event's site.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.crud.scope import Scope

logger = logging.getLogger(__name__)

CHANNEL = "microplate_events"
QUEUE_SIZE = 256


def notify(session: Session, event: dict[str, Any]) -> None:
    """Queue an event for delivery when the session's transaction commits."""
    payload = json.dumps(event, default=str, separators=(",", ":"))
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
    )


@dataclass(eq=False)
class Subscription:
    scope: Scope
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )
    dropped: int = 0

    def offer(self, event: dict[str, Any]) -> None:
        # Runs on the subscriber's loop; a slow dashboard loses events, never blocks others.
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1


class Broadcaster:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self, scope: Scope) -> Subscription:
        sub = Subscription(scope=scope, loop=asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        """Thread-safe fan-out to the subscribers whose scope covers the event's site."""
        try:
            site_id = uuid.UUID(str(event.get("site_id")))
        except ValueError:
            logger.warning("dropping event without a valid site_id: %s", event.get("type"))
            return
        with self._lock:
            targets = [sub for sub in self._subs if sub.scope.allows(site_id)]
        for sub in targets:
            try:
                sub.loop.call_soon_threadsafe(sub.offer, event)
            except RuntimeError:  # the subscriber's loop has closed
                self.unsubscribe(sub)


class NotifyListener:
    """A thread that LISTENs on Postgres and feeds a Broadcaster until stopped."""

    def __init__(self, conninfo: str, broadcaster: Broadcaster) -> None:
        self.conninfo = conninfo
        self.broadcaster = broadcaster
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self, *, wait: float = 5.0) -> None:
        self._thread.start()
        self._ready.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                logger.warning(
                    "event listener lost its connection (%s); retrying", type(exc).__name__
                )
                self._stop.wait(1.0)

    def _listen(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    try:
                        event = json.loads(note.payload)
                    except ValueError:
                        continue
                    self.broadcaster.publish(event)


def libpq_conninfo(database_url: str) -> str:
    """SQLAlchemy URL -> libpq URL (drop the `+psycopg` driver suffix)."""
    scheme, sep, rest = database_url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest

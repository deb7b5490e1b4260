"""A small thread-safe event bus.

Workers (pipeline, sync, calibration) publish from their own threads; the HTTP layer consumes
from asyncio (`async for event in bus.subscribe()`). Publishing never blocks: a subscriber that
falls behind loses its oldest events (counted in `Subscription.dropped`) instead of stalling a
pipeline thread.

Event types: `run.created`, `run.updated`, `run.deleted`, `capture.progress`, `sync.status`,
`sample.updated`, `calibration.updated`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

EVENT_TYPES = (
    "run.created",
    "run.updated",
    "run.deleted",
    "capture.progress",
    "sync.status",
    "sample.updated",
    "calibration.updated",
)


class Event(BaseModel):
    seq: int
    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class Subscription:
    """One consumer's view of the bus; iterate with `async for` or call `get(timeout)`."""

    def __init__(self, bus: EventBus, maxlen: int) -> None:
        self._bus = bus
        self._buf: deque[Event] = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        # asyncio side: the loop and future of a pending `__anext__`, set under `_cond`.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def _push(self, event: Event) -> None:
        with self._cond:
            if self._closed:
                return
            if len(self._buf) >= self._maxlen:
                self._buf.popleft()
                self.dropped += 1
            self._buf.append(event)
            self._cond.notify_all()
            self._wake_async()

    def _wake_async(self) -> None:
        waiter, loop = self._waiter, self._loop
        if waiter is not None and loop is not None:
            self._waiter = None

            def _set() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            try:
                loop.call_soon_threadsafe(_set)
            except RuntimeError:  # the consumer's loop is already closed
                logger.debug("event subscriber loop closed")

    def get(self, timeout: float | None = None) -> Event | None:
        """Blocking read for threads and tests; None on timeout or when closed."""
        with self._cond:
            if not self._buf and not self._closed:
                self._cond.wait(timeout)
            if self._buf:
                return self._buf.popleft()
            return None

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            self._wake_async()
        self._bus._unsubscribe(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            with self._cond:
                if self._buf:
                    return self._buf.popleft()
                if self._closed:
                    raise StopAsyncIteration
                loop = asyncio.get_running_loop()
                self._loop = loop
                fut: asyncio.Future[None] = loop.create_future()
                self._waiter = fut
            await fut

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, subscriber_buffer: int = 1000) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._buffer = subscriber_buffer

    def publish(self, type: str, payload: dict[str, Any]) -> Event:
        event = Event(
            seq=next(self._seq), type=type, payload=payload, at=datetime.now(timezone.utc)
        )
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub._push(event)
        return event

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._buffer)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

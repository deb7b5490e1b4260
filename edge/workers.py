"""A periodic background worker: runs every `interval_s` (or at once when woken); errors are
logged and retried next round, never fatal."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Worker:
    def __init__(self, name: str, interval_s: float, func: Callable[[], object]) -> None:
        self.name = name
        self.interval_s = interval_s
        self.func = func
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run now instead of at the end of the interval (e.g. retention when the disk fills)."""
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.func()
            except Exception:
                logger.exception("worker %s failed; retrying in %.0f s", self.name, self.interval_s)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

"""A periodic background worker: `while not stop.wait(interval)`, errors logged, never fatal."""

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
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.func()
            except Exception:
                logger.exception("worker %s failed; retrying in %.0f s", self.name, self.interval_s)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

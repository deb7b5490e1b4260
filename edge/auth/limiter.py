"""Per-address counting of failed attempts, with exponential lockout."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureLimiter:
    """Counts failed attempts per key (client address); locks the key out, exponentially.

    ``max_failures`` failures within ``window_s`` lock the key for ``lockout_s``; each further
    lockout doubles, up to ``lockout_max_s``. A success clears the key.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: float,
        lockout_s: float,
        lockout_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._lockout_max_s = lockout_max_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def locked_for(self, key: str) -> float:
        """Seconds the key is still locked out (0 when it may try)."""
        with self._lock:
            until = self._locked_until.get(key, 0.0)
            return max(0.0, until - self._clock())

    def record_failure(self, key: str) -> float:
        """Count a failure; return the lockout it started in seconds (0 when none)."""
        with self._lock:
            now = self._clock()
            attempts = self._failures.setdefault(key, deque())
            self._failures.move_to_end(key)
            attempts.append(now)
            while attempts and attempts[0] < now - self._window_s:
                attempts.popleft()
            self._evict()
            if len(attempts) < self._max_failures:
                return 0.0
            attempts.clear()
            strikes = self._strikes.get(key, 0) + 1
            self._strikes[key] = strikes
            duration = min(self._lockout_max_s, self._lockout_s * 2 ** (strikes - 1))
            self._locked_until[key] = now + duration
            return float(duration)

    def record_success(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._locked_until.pop(key, None)
            self._strikes.pop(key, None)

    def _evict(self) -> None:
        # Bound memory against a flood of addresses: forget the least recently failing keys,
        # but never one that is locked out right now.
        now = self._clock()
        while len(self._failures) > self._max_keys:
            key, _ = self._failures.popitem(last=False)
            if self._locked_until.get(key, 0.0) <= now:
                self._locked_until.pop(key, None)
                self._strikes.pop(key, None)

"""Reconnect back-off: capped exponential with full jitter.

paho's own back-off doubles without jitter up to its maximum; with the old 60 s maximum an
appliance resumed 49 s after a 74 s broker outage ended, and 200 appliances that lost the
broker together would all come back in the same instant. Here attempt `n` waits a random time
in `[min_s, min(max_s, min_s * 2**n)]`: after a long outage every appliance tries again within
`max_s` of the broker's return (10 s by default, so runs resume within 15 s), spread evenly over
that interval instead of in one burst (`tests/sync/test_backoff.py` shows the spread of 200).
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError("back-off needs 0 < min_s <= max_s")
        self.min_s, self.max_s = float(min_s), float(max_s)
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311  (spread, not secrecy)

    def next(self) -> float:
        """The wait before the next attempt; each call counts one failed attempt."""
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return self._rng.uniform(self.min_s, ceiling)

    def reset(self) -> None:
        self.attempt = 0

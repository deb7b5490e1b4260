"""The bounded in-flight window of the sync worker (pure bookkeeping, no I/O).

An outbox entry is *in flight* from its publish until the cloud's ack for its `(run_id, edit)`.
Rules:
- at most `size` entries in flight;
- entries go out in outbox order, and a later entry of a run waits while an earlier entry of
  the same run is still unacknowledged, so the cloud never sees a run's `deleted` event before
  the run itself, whichever ingest worker of a shared subscription picks it up;
- an entry without an ack after its timeout is sent again; the timeout doubles per attempt up
  to a ceiling (an overloaded cloud is not flooded with duplicates).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

logger = logging.getLogger(__name__)


_E = TypeVar("_E", bound="EntryLike")


class EntryLike(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def run_id(self) -> str: ...


@dataclass
class Flight:
    entry_id: int
    run_id: str
    edit: int
    sent_at: float
    attempts: int = 1


class Window:
    def __init__(self, size: int, ack_timeout_s: float, ack_timeout_max_s: float) -> None:
        self.size = size
        self.ack_timeout_s = ack_timeout_s
        self.ack_timeout_max_s = ack_timeout_max_s
        self.flights: dict[int, Flight] = {}
        self._by_key: dict[tuple[str, int], set[int]] = {}

    def __len__(self) -> int:
        return len(self.flights)

    @property
    def free(self) -> int:
        return max(0, self.size - len(self.flights))

    def reset(self) -> None:
        """Forget what is in flight (after a reconnect everything unacked goes out again)."""
        self.flights.clear()
        self._by_key.clear()

    def select(self, pending: Sequence[_E], *, skip: Iterable[int] = ()) -> list[_E]:
        """Entries of `pending` (oldest first) to publish now.

        `skip`: entries that cannot go yet for another reason (their images are still
        uploading); like in-flight entries they hold back later entries of the same run.
        """
        skipped = set(skip)
        chosen: list[_E] = []
        blocked_runs: set[str] = set()
        room = self.free
        for entry in pending:
            if room <= 0:
                break
            if entry.run_id in blocked_runs:
                continue
            blocked_runs.add(entry.run_id)
            if entry.id in self.flights or entry.id in skipped:
                continue
            chosen.append(entry)
            room -= 1
        return chosen

    def sent(self, entry_id: int, run_id: str, edit: int, now: float) -> None:
        flight = self.flights.get(entry_id)
        if flight is None:
            self.flights[entry_id] = Flight(entry_id, run_id, edit, now)
            self._by_key.setdefault((run_id, edit), set()).add(entry_id)
        else:
            flight.sent_at = now
            flight.attempts += 1

    def acked(self, run_id: str, edit: int) -> list[int]:
        """Entry ids settled by an ack for `(run_id, edit)` (removed from the window)."""
        ids = self._by_key.pop((run_id, edit), set())
        for entry_id in ids:
            self.flights.pop(entry_id, None)
        return sorted(ids)

    def drop(self, entry_id: int) -> None:
        flight = self.flights.pop(entry_id, None)
        if flight is not None:
            ids = self._by_key.get((flight.run_id, flight.edit))
            if ids is not None:
                ids.discard(entry_id)
                if not ids:
                    del self._by_key[(flight.run_id, flight.edit)]

    def timeout_for(self, attempts: int) -> float:
        backoff: float = self.ack_timeout_s * 2.0 ** max(0, attempts - 1)
        return min(self.ack_timeout_max_s, backoff)

    def expired(self, now: float) -> list[Flight]:
        """Flights whose ack is overdue, oldest entry first."""
        late = [f for f in self.flights.values() if now - f.sent_at >= self.timeout_for(f.attempts)]
        return sorted(late, key=lambda f: f.entry_id)

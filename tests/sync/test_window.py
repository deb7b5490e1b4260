"""The in-flight window: bounded, in order, one message per run at a time, resend backoff."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edge.sync.window import Window


@dataclass(frozen=True)
class E:
    id: int
    run_id: str


def test_window_is_bounded_and_in_order() -> None:
    w = Window(3, 10.0, 40.0)
    pending = [E(i, f"r{i}") for i in range(1, 8)]
    chosen = w.select(pending)
    assert [e.id for e in chosen] == [1, 2, 3]
    for e in chosen:
        w.sent(e.id, e.run_id, 0, now=0.0)
    assert w.free == 0
    assert w.select(pending) == []
    assert w.acked("r2", 0) == [2]
    still = [e for e in pending if e.id != 2]  # delivered entries leave the outbox's pending
    assert [e.id for e in w.select(still)] == [4]


def test_later_entry_of_a_run_waits_for_the_earlier_one() -> None:
    w = Window(10, 10.0, 40.0)
    pending = [E(1, "a"), E(2, "b"), E(3, "a"), E(4, "c")]
    chosen = w.select(pending)
    assert [e.id for e in chosen] == [1, 2, 4]  # 3 (a's deletion) waits for 1 (a's run)
    for e in chosen:
        w.sent(e.id, e.run_id, 0, now=0.0)
    assert w.select(pending) == []
    w.acked("a", 0)
    assert [e.id for e in w.select([E(3, "a")])] == [3]


def test_skipped_entries_hold_back_their_run_only() -> None:
    w = Window(10, 10.0, 40.0)
    pending = [E(1, "a"), E(2, "a"), E(3, "b")]
    assert [e.id for e in w.select(pending, skip={1})] == [3]


def test_ack_for_unknown_key_settles_nothing() -> None:
    w = Window(10, 10.0, 40.0)
    w.sent(1, "a", 0, now=0.0)
    assert w.acked("a", 1) == []
    assert w.acked("zzz", 0) == []
    assert len(w) == 1


@pytest.mark.parametrize(("attempts", "timeout"), [(1, 10.0), (2, 20.0), (3, 40.0), (9, 40.0)])
def test_resend_timeout_doubles_up_to_a_ceiling(attempts: int, timeout: float) -> None:
    assert Window(10, 10.0, 40.0).timeout_for(attempts) == timeout


def test_expired_flights_and_reset() -> None:
    w = Window(10, 10.0, 40.0)
    w.sent(1, "a", 0, now=0.0)
    w.sent(2, "b", 0, now=5.0)
    assert [f.entry_id for f in w.expired(now=12.0)] == [1]
    w.sent(1, "a", 0, now=12.0)  # sent again: attempt 2, timeout 20 s
    assert [f.entry_id for f in w.expired(now=25.0)] == [2]
    assert w.flights[1].attempts == 2
    w.drop(2)
    assert w.acked("b", 0) == []
    w.reset()
    assert len(w) == 0 and w.free == 10

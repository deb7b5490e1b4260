from __future__ import annotations

import asyncio
import threading

from edge.events import EventBus


def test_events_cross_threads_in_order() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    threading.Thread(
        target=lambda: [bus.publish("run.created", {"i": i}) for i in range(50)]
    ).start()
    got = [sub.get(timeout=2) for _ in range(50)]
    assert [e.payload["i"] for e in got if e] == list(range(50))
    sub.close()
    assert bus.subscriber_count == 0
    assert sub.get(timeout=0.01) is None


def test_asyncio_consumer_receives_events_from_threads() -> None:
    bus = EventBus()

    async def consume() -> list[str]:
        sub = bus.subscribe()
        seen: list[str] = []

        def produce() -> None:
            for kind in ("run.created", "sample.updated", "run.deleted"):
                bus.publish(kind, {})
            sub.close()

        threading.Timer(0.05, produce).start()
        async for event in sub:
            seen.append(event.type)
        return seen

    assert asyncio.run(asyncio.wait_for(consume(), 5)) == [
        "run.created",
        "sample.updated",
        "run.deleted",
    ]


def test_slow_subscriber_drops_oldest_instead_of_blocking() -> None:
    bus = EventBus(subscriber_buffer=3)
    sub = bus.subscribe()
    for i in range(10):
        bus.publish("capture.progress", {"i": i})
    assert sub.dropped == 7
    assert [sub.get(0).payload["i"] for _ in range(3)] == [7, 8, 9]  # type: ignore[union-attr]

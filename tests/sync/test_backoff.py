"""Reconnect back-off: 200 appliances that lost the broker together come back within the cap
of its return, spread out instead of in one burst (figures printed), and one real appliance
resumes within 15 s after an outage long enough to reach the cap."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from edge.config import SyncSettings
from edge.sync.backoff import Backoff

OUTAGE_S = 74.0  # the outage of the report: the old back-off resumed 49 s after it ended
DEVICES = 200


def resume_delays(make: type[Backoff] | None, min_s: float, max_s: float) -> list[float]:
    """Seconds from the broker's return to each device's first successful attempt, when all
    of them lost it at t=0 and retry at once (the worst case for a herd)."""
    delays = []
    for seed in range(DEVICES):
        backoff = Backoff(min_s, max_s, random.Random(seed))
        t = 0.0
        while t < OUTAGE_S:
            if make is None:  # paho's own: doubling, no jitter
                t += min(max_s, min_s * 2**backoff.attempt)
                backoff.attempt += 1
            else:
                t += backoff.next()
        delays.append(t - OUTAGE_S)
    return delays


def test_200_devices_resume_within_the_cap_spread_out() -> None:
    settings = SyncSettings()
    delays = resume_delays(Backoff, settings.reconnect_min_s, settings.reconnect_max_s)
    old = resume_delays(None, 1, 60)
    buckets = Counter(int(d) for d in delays)
    print(
        f"\n{DEVICES} devices after a {OUTAGE_S:.0f} s outage: resume after "
        f"min {min(delays):.1f} s, median {sorted(delays)[DEVICES // 2]:.1f} s, "
        f"max {max(delays):.1f} s; busiest second {max(buckets.values())} devices; "
        f"per second: {[buckets.get(s, 0) for s in range(11)]}"
    )
    print(f"old back-off (1..60 s, no jitter): every device resumes after {old[0]:.0f} s")
    assert max(delays) <= settings.reconnect_max_s < 15
    assert len(set(old)) == 1 and old[0] > 15  # the report's problem, reproduced
    # No thundering herd: no second takes more than a fifth of the fleet (all of it did),
    # and at least eight different seconds see reconnects.
    assert max(buckets.values()) <= DEVICES // 5
    assert len(buckets) >= 8


def test_the_wait_grows_then_stays_within_bounds() -> None:
    backoff = Backoff(1, 10, random.Random(7))
    waits = [backoff.next() for _ in range(50)]
    assert all(1 <= w <= 10 for w in waits)
    assert waits[0] <= 1.0 + 1e-9  # the first retry is prompt
    assert max(waits[:3]) <= 4
    backoff.reset()
    assert backoff.next() <= 1.0 + 1e-9
    with pytest.raises(ValueError):
        Backoff(5, 1)


@pytest.mark.mqtt
def test_a_real_appliance_resumes_within_15_s_of_the_broker_returning(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from edge.sync.link import MqttLink
    from tests.sync.conftest import make_broker
    from tests.sync.world import accounts, sync_settings

    broker = make_broker(accounts(1, 1))
    acc = broker.devices[0]
    link = MqttLink(
        sync_settings(broker.port, acc, reconnect_max_s=10),
        client_id=acc.username,
        subscriptions=[f"microplate/v1/{acc.site}/{acc.device}/acks"],
        on_message=lambda topic, payload: None,
    )
    link.start()
    try:
        assert link.wait_connected(10)
        broker.server.kill()
        deadline = time.monotonic() + 10
        while link.connected and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(25)  # long enough for the back-off to reach its 10 s cap
        attempts = link.backoff.attempt
        broker.server.start()
        back = time.monotonic()
        assert link.wait_connected(30), "never reconnected"
        took = time.monotonic() - back
        print(f"\nreconnected {took:.1f} s after the broker came back ({attempts} failed tries)")
        assert took <= 15
    finally:
        link.stop()
        broker.server.kill()

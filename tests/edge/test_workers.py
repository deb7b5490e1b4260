from __future__ import annotations

import threading

from edge.workers import Worker


def test_worker_runs_when_woken_survives_errors_and_stops() -> None:
    calls: list[int] = []
    ran = threading.Event()

    def job() -> None:
        calls.append(1)
        ran.set()
        if len(calls) == 1:
            raise RuntimeError("first round fails")

    w = Worker("t", 3600.0, job)
    w.start()
    w.wake()
    assert ran.wait(5)
    ran.clear()
    w.wake()  # the failure above did not kill it
    assert ran.wait(5)
    w.stop(5)
    assert len(calls) == 2

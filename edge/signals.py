"""Stopping the appliance in order on SIGTERM/SIGINT, shared by `edge.cli` and `edge.demo`."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """uvicorn shuts down on SIGTERM/SIGINT, then re-raises the signal with the handlers it
    found. Ours turn it into an exception, so the appliance still stops in order (plates in
    hand finished, workers joined, database closed) and the exit status is 0."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in signals}
    try:
        yield
    except _Stop:
        logger.info("stopped by a signal")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

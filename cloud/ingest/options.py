"""The ingest worker's options and counters."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

__all__ = ["IngestOptions", "IngestStats", "default_client_id"]


@dataclass
class IngestOptions:
    batch_size: int = 500
    batch_wait_s: float = 0.05
    # None: the secret group derived from the ingest password (`cloud.mqtt_auth`), so that a
    # device cannot join it and have the broker drop part of every device's runs.
    share_group: str | None = None
    client_id: str | None = None  # stable per worker so its session survives a restart
    # How long the broker keeps a worker's session after it vanished without a clean stop.
    # Mosquitto keeps giving an offline session its share of the subscription's messages and
    # holds them for it, so a worker that never comes back strands its share for this long
    # (the appliances resend them after their ack timeout). Long enough for a restart.
    session_expiry_s: int = 120
    # On a clean stop: seconds to finish what the broker already gave this worker before
    # leaving (then the session is ended, so the broker sends nothing more its way).
    drain_on_stop_s: float = 10.0
    keepalive_s: int = 30
    device_cache_s: float = 5.0
    retry_max_s: float = 10.0
    # Unacknowledged messages the broker may push to this worker (MQTT v5 Receive Maximum).
    # Large on purpose: with a small quota the bench saw workers sit idle after a burst while
    # the broker still held messages for them (cause not established; suspected Mosquitto
    # 2.0.11 queue handling). Raise the broker's max_inflight_messages to match.
    # Bounded by memory too (see the module doc); 2,000 still keeps four batches in flight.
    receive_max: int = 2_000
    max_packet_bytes: int = 1024 * 1024 + 4096  # the broker's message limit plus headers
    queue_bytes: int = 64 * 1024 * 1024
    batch_bytes: int = 16 * 1024 * 1024
    purge_every_s: float = 600.0  # events whose run never came (cloud.crud.pending)


@dataclass
class IngestStats:
    received: int = 0
    batches: int = 0
    runs_written: int = 0
    events_applied: int = 0
    dead_letters: int = 0
    acks_sent: int = 0
    db_retries: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.monotonic)


def default_client_id(username: str) -> str:
    """`<ingest user>-<host>`, without dots: device accounts connect with their user name as
    client id (`site.device`, always one dot), so service client ids never collide with one."""
    return f"{username}-{socket.gethostname()}".replace(".", "-")[:64]

"""The product speaks only standard MQTT 5 to its broker, so a clustered broker (EMQX, VerneMQ,
HiveMQ) could replace Mosquitto without a code change (docs/scale-out.md, "Broker").

The real edge SyncWorker and the real ingest worker exchange a run and its ack through a
recording TCP proxy in front of a private Mosquitto. Every packet each client sends is
parsed from the bytes on the wire, and must be:

- a CONNECT of protocol "MQTT" level 5, without Mosquitto's bridge bit (0x80 in the level);
- SUBSCRIBE filters under `microplate/v1/` or MQTT 5 shared subscriptions of them
  (`$share/<group>/microplate/v1/...`), nothing under `$SYS` or `$CONTROL` (Mosquitto's
  broker topics and its dynamic-security API);
- PUBLISH topics under `microplate/v1/` only;
- of the packet types MQTT 5 defines, with property identifiers MQTT 5 defines.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sync.conftest import Broker
from tests.sync.world import new_run, open_store, queue_runs, sync_settings, template_message

pytestmark = [pytest.mark.mqtt, pytest.mark.postgres]

# MQTT 5.0, section 2.2.2.2: every property identifier the standard defines.
MQTT5_PROPERTIES = {
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A,
    0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
}  # fmt: skip
CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT = 1, 3, 8, 10, 14
# Packet types 1..15 are all MQTT 5's; a client may send these (2, 4.., 9, 11, 13 are server's).
CLIENT_TYPES = {1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _utf8(data: bytes, i: int) -> tuple[str, int]:
    n = int.from_bytes(data[i : i + 2], "big")
    return data[i + 2 : i + 2 + n].decode("utf-8"), i + 2 + n


def _property_ids(data: bytes, i: int) -> tuple[list[int], int]:
    """The identifiers of one property block (MQTT 5, 2.2.2) and the index after it."""
    length, i = _varint(data, i)
    end, ids = i + length, []
    while i < end:
        pid, i = _varint(data, i)
        ids.append(pid)
        if pid in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            i += 1
        elif pid in (0x13, 0x21, 0x22, 0x23):
            i += 2
        elif pid in (0x02, 0x11, 0x18, 0x27):
            i += 4
        elif pid == 0x0B:
            _, i = _varint(data, i)
        elif pid == 0x26:  # user property: two strings
            _, i = _utf8(data, i)
            _, i = _utf8(data, i)
        elif pid in (0x09, 0x16):  # binary data
            i += 2 + int.from_bytes(data[i : i + 2], "big")
        elif pid in MQTT5_PROPERTIES:  # a UTF-8 string
            _, i = _utf8(data, i)
        else:
            return ids, end
    return ids, end


@dataclass
class Seen:
    packets: list[tuple[int, bytes]] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    properties: list[int] = field(default_factory=list)


def parse_client_stream(data: bytes) -> Seen:
    seen = Seen()
    i = 0
    while i < len(data):
        kind, flags = data[i] >> 4, data[i] & 0x0F
        length, body_at = _varint(data, i + 1)
        body = data[body_at : body_at + length]
        i = body_at + length
        seen.packets.append((kind, body))
        if kind == CONNECT:
            name, j = _utf8(body, 0)
            seen.connects.append((name, body[j]))
            props, _ = _property_ids(body, j + 4)  # level, flags, keep-alive (2)
            seen.properties += props
        elif kind == SUBSCRIBE:
            props, j = _property_ids(body, 2)
            seen.properties += props
            while j < len(body):
                topic, j = _utf8(body, j)
                seen.filters.append(topic)
                j += 1  # subscription options
        elif kind == PUBLISH:
            topic, j = _utf8(body, 0)
            seen.topics.append(topic)
            if (flags >> 1) & 0x03:
                j += 2  # packet id
            props, _ = _property_ids(body, j)
            seen.properties += props
    return seen


class RecordingProxy:
    """127.0.0.1:<port> -> the broker; keeps every byte each client sends."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.streams: list[bytearray] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self.upstream))
            sent = bytearray()
            self.streams.append(sent)
            threading.Thread(target=self._pipe, args=(client, broker, sent), daemon=True).start()
            threading.Thread(target=self._pipe, args=(broker, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
        try:
            while chunk := src.recv(65536):
                if keep is not None:
                    keep += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.server.close()


@pytest.fixture
def proxy(broker: Broker) -> Iterator[RecordingProxy]:
    p = RecordingProxy(broker.port)
    yield p
    p.close()


def test_ingest_and_appliance_use_only_standard_mqtt5(
    broker: Broker, cloud_db: str, proxy: RecordingProxy, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text

    from cloud.ingest import IngestOptions, IngestWorker
    from cloud.settings import CloudSettings
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    settings = CloudSettings(
        database_url=cloud_db,
        mqtt_broker_url=f"mqtt://127.0.0.1:{proxy.port}",
        mqtt_ingest_password=broker.ingest_password,
    )
    ingest = IngestWorker(settings, IngestOptions(client_id="ingest-standard", batch_wait_s=0.1))
    ingest.start()
    acc = broker.devices[0]
    store = open_store(tmp_path / "edge.db")
    run = new_run(template_message(acc.site, acc.device), "S-STD-1")
    queue_runs(store, [run])
    edge = SyncWorker(
        sync_settings(proxy.port, acc), outbox=Outbox(store), site_id=acc.site, device_id=acc.device
    )
    engine = create_engine(cloud_db)
    try:
        assert ingest.wait_connected(10)
        edge.start()
        deadline = time.monotonic() + 30
        while outbox.backlog(store)[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox.backlog(store)[0] == 0, "the run was not acked end to end via the proxy"
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT count(*) FROM runs WHERE run_id = :id"), {"id": run.run_id}
            ).scalar()
        assert stored == 1
    finally:
        edge.stop()
        ingest.stop()
        ingest.engine.dispose()
        engine.dispose()
        store.close()

    streams = [parse_client_stream(bytes(s)) for s in proxy.streams if s]
    assert len(streams) >= 2  # the appliance's connection and the ingest's
    for seen in streams:
        assert seen.connects == [("MQTT", 5)], seen.connects  # no bridge bit (0x85)
        assert {kind for kind, _ in seen.packets} <= CLIENT_TYPES
        assert set(seen.properties) <= MQTT5_PROPERTIES
        for f in seen.filters:
            if f.startswith("$share/"):
                _, group, rest = f.split("/", 2)
                assert group and not set(group) & set("+#/"), f
                f = rest
            assert f.startswith("microplate/v1/"), f
        for topic in seen.topics:
            assert topic.startswith("microplate/v1/"), topic
    every_filter = [f for seen in streams for f in seen.filters]
    assert any(f.startswith("$share/") for f in every_filter)  # the ingest's shared subscription
    assert any(f.endswith("/acks") and not f.startswith("$") for f in every_filter)  # the device

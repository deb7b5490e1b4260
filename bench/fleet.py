"""Fleet simulation: many appliances on one broker, on loopback, for a bounded time.

    python bench/fleet.py [--devices 1000] [--seconds 60] [--plates-per-hour 20]
                          [--backlog 3] [--groups 8] [--drain-timeout 120]

A private Mosquitto (passwords, per-device ACL, as provisioned) and a private Postgres; one
ingest worker process (`run_ingest`, as the CLI runs it). `--devices` MQTT clients, each with
its own client id and credentials, connect (MQTT 5, persistent session), subscribe to their
acks, publish `--backlog` queued runs at once (an outage just ended), then one run every
3600/`--plates-per-hour` s (jittered) for `--seconds`; a device counts a run as delivered when
its ack arrives, like the appliance's outbox. The clients share `--groups` threads, each
driving its clients' sockets with paho's `loop()`.

Printed every 5 s and at the end: broker connections (`$SYS/broker/clients/connected`),
runs published / acked / in Postgres, device backlog (published, not yet acked: total and
worst device), ingest lag (Postgres `received_at` minus the run's capture time: p50/p95/max),
and the broker's and the worker's resident memory. Everything stops at the end; nothing
leaves loopback. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from rich.console import Console  # noqa: E402

from tests.sync.harness import Mosquitto, PgCluster, world_dir  # noqa: E402
from tests.sync.world import (  # noqa: E402
    INGEST_USER,
    DeviceAccount,
    accounts,
    acl_text,
    new_run,
    template_message,
)

console = Console()
MONITOR = "fleet-monitor"


@dataclass
class Device:
    acc: DeviceAccount
    client: mqtt.Client
    due: float
    period: float
    backlog: int
    published: int = 0
    acked: int = 0
    template: object = None
    connected: bool = False


@dataclass
class Fleet:
    devices: list[Device] = field(default_factory=list)
    broker_clients: int = 0
    broker_clients_max: int = 0
    stop_publishing: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def totals(self) -> tuple[int, int, int, int]:
        pub = sum(d.published for d in self.devices)
        ack = sum(d.acked for d in self.devices)
        worst = max((d.published - d.acked for d in self.devices), default=0)
        return pub, ack, pub - ack, worst


def make_client(acc: DeviceAccount, port: int, dev: Device) -> mqtt.Client:
    from core.topics import Topics

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=acc.username,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(acc.username, acc.password)
    client.max_inflight_messages_set(100)
    acks = Topics(acc.site, acc.device).acks

    def on_connect(c, userdata, flags, reason, props):  # type: ignore[no-untyped-def]
        if not reason.is_failure:
            c.subscribe(acks, qos=1)
            dev.connected = True

    def on_message(c, userdata, msg):  # type: ignore[no-untyped-def]
        dev.acked += 1

    client.on_connect = on_connect
    client.on_message = on_message
    return client


def drive(group: list[Device], fleet: Fleet, port: int, connect_gap: float) -> None:
    """One thread: connect its clients (paced), then publish when due and pump the sockets.

    paho's own loop() uses select(), which fails past file descriptor 1024 (about 340
    clients in one process); this drives the clients with epoll through paho's external-loop
    calls (loop_read / loop_write / loop_misc) instead.
    """
    import selectors

    from core.topics import Topics
    from core.wire import encode_message

    sel = selectors.DefaultSelector()
    by_sock: dict[int, Device] = {}

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            by_sock[key.fd].client.loop_read()
        for dev in group:
            if dev.client.want_write():
                dev.client.loop_write()

    for dev in group:
        dev.client.connect("127.0.0.1", port, keepalive=60, clean_start=False)
        sock = dev.client.socket()
        sel.register(sock, selectors.EVENT_READ)
        by_sock[sock.fileno()] = dev
        pump(connect_gap)
    seq = 0
    last_misc = time.monotonic()
    while not fleet.stop.is_set():
        now = time.monotonic()
        if now - last_misc > 1.0:
            for dev in group:
                dev.client.loop_misc()  # keepalive pings
            last_misc = now
        for dev in group:
            if not dev.connected or fleet.stop_publishing.is_set():
                continue
            while dev.backlog > 0 or now >= dev.due:
                if dev.backlog > 0:
                    dev.backlog -= 1
                else:
                    dev.due = now + dev.period * random.uniform(0.5, 1.5)
                at = datetime.now(timezone.utc)
                run = new_run(dev.template, f"F-{dev.acc.device}-{seq:06d}")  # type: ignore[arg-type]
                run = run.model_copy(update={"captured_at": at, "processed_at": at})
                seq += 1
                topic = Topics(dev.acc.site, dev.acc.device).runs
                dev.client.publish(topic, encode_message(run), qos=1)
                dev.published += 1
                if dev.backlog == 0 and now < dev.due:
                    break
        pump(0.01)
    for dev in group:
        dev.client.disconnect()
    pump(0.1)
    sel.close()


def monitor(port: int, password: str, fleet: Fleet) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=MONITOR,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(MONITOR, password)

    def on_connect(c, userdata, flags, reason, props):  # type: ignore[no-untyped-def]
        c.subscribe("$SYS/broker/clients/connected")

    def on_message(c, userdata, msg):  # type: ignore[no-untyped-def]
        fleet.broker_clients = int(msg.payload)
        fleet.broker_clients_max = max(fleet.broker_clients_max, fleet.broker_clients)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def lag(conn) -> tuple[float, float, float, int]:  # type: ignore[no-untyped-def]
    row = conn.execute(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY l), max(l), count(*) FROM "
        "(SELECT extract(epoch FROM received_at - read_at) AS l FROM runs) t"
    ).fetchone()
    return (float(row[0] or 0), float(row[1] or 0), float(row[2] or 0), int(row[3]))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0, help="publishing phase")
    p.add_argument("--plates-per-hour", type=float, default=20.0, help="per device")
    p.add_argument("--backlog", type=int, default=3, help="runs each device holds at connect")
    p.add_argument("--groups", type=int, default=8, help="client threads")
    p.add_argument("--connect-rate", type=float, default=200.0, help="new connections/s")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    args = p.parse_args()
    import psycopg
    from sync import fresh_db, start_ingest, stop  # bench/sync.py

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = world_dir("mp-fleet-")
    sites = max(1, args.devices // 20)
    devices = accounts(sites, -(-args.devices // sites))[: args.devices]
    ingest_pw, monitor_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    creds = {a.username: a.password for a in devices} | {
        INGEST_USER: ingest_pw,
        MONITOR: monitor_pw,
    }
    acl = acl_text(devices) + f"\nuser {MONITOR}\ntopic read $SYS/#\n"
    broker = Mosquitto(work / "broker", accounts=creds, acl=acl, autosave_s=60)
    with broker.conf.open("a") as conf:
        conf.write("sys_interval 1\nmax_connections -1\n")
    pg = PgCluster(world_dir("mp-fleet-pg-"))
    fleet = Fleet()
    procs = []
    threads: list[threading.Thread] = []
    console.print(
        f"[bold]fleet[/]: {args.devices} devices on {sites} sites, {args.plates_per_hour:g} "
        f"plates/h each ({args.devices * args.plates_per_hour / 3600:.1f} runs/s), backlog "
        f"{args.backlog} each, {args.seconds:g} s; {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    try:
        pg.init()
        pg.start()
        broker.start()
        url = fresh_db(pg, "fleet", devices)
        procs = start_ingest(url, broker.port, ingest_pw, 1, work)
        mon = monitor(broker.port, monitor_pw, fleet)
        broker_pid = broker.proc.pid if broker.proc else -1
        start = time.monotonic()
        for acc in devices:
            dev = Device(
                acc=acc,
                client=None,
                due=0.0,
                period=3600 / args.plates_per_hour,  # type: ignore[arg-type]
                backlog=args.backlog,
                template=template_message(acc.site, acc.device),
            )
            dev.due = start + random.uniform(0, dev.period)
            dev.client = make_client(acc, broker.port, dev)
            fleet.devices.append(dev)
        groups = [fleet.devices[i :: args.groups] for i in range(args.groups)]
        gap = args.groups / args.connect_rate
        threads = [
            threading.Thread(target=drive, args=(g, fleet, broker.port, gap), daemon=True)
            for g in groups
        ]
        for th in threads:
            th.start()
        libpq = url.replace("+psycopg", "")
        all_connected_at = None
        worst_backlog = 0
        with psycopg.connect(libpq, autocommit=True) as conn:

            def report(tag: str) -> None:
                nonlocal worst_backlog
                pub, ack, backlog, worst = fleet.totals()
                worst_backlog = max(worst_backlog, worst)
                p50, p95, mx, n = lag(conn)
                console.print(
                    f"{tag:>6} broker clients {fleet.broker_clients:5d} | published {pub:6d} "
                    f"acked {ack:6d} in Postgres {n:6d} | backlog {backlog:5d} (worst device "
                    f"{worst}) | ingest lag p50 {p50:5.2f} s p95 {p95:5.2f} s max {mx:5.2f} s | "
                    f"RSS broker {rss_mb(broker_pid):5.0f} MB worker {rss_mb(procs[0].pid):5.0f} MB"
                )

            next_report = start + 5
            while time.monotonic() - start < args.seconds:
                if all_connected_at is None and all(d.connected for d in fleet.devices):
                    all_connected_at = time.monotonic() - start
                if time.monotonic() >= next_report:
                    report(f"{time.monotonic() - start:4.0f}s")
                    next_report += 5
                time.sleep(0.2)
            fleet.stop_publishing.set()
            deadline = time.monotonic() + args.drain_timeout
            while time.monotonic() < deadline and fleet.totals()[2] > 0:
                time.sleep(0.5)
            drained = time.monotonic() - start
            time.sleep(1.5)  # one more $SYS update
            report("end")
            pub, ack, backlog, _ = fleet.totals()
            sent = sum(d.published > 0 for d in fleet.devices)
            console.print(f"devices that saw their CONNACK and published: {sent}")
            console.print(
                f"all {args.devices} connected after "
                + (f"{all_connected_at:.1f} s" if all_connected_at else "never (within the run)")
                + f"; most broker clients seen {fleet.broker_clients_max} (devices, ingest, "
                f"monitor); "
                f"{pub} runs published, {ack} acked, {backlog} unacked at {drained:.0f} s; "
                f"worst device backlog {worst_backlog}"
            )
        mon.loop_stop()
        mon.disconnect()
    finally:
        fleet.stop_publishing.set()
        fleet.stop.set()
        for th in threads:
            th.join(30)
        stop(procs)
        broker.kill()
        pg.stop("immediate")
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

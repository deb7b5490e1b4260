"""10,000 plate runs from several appliances through broker, ingest and Postgres failures.

Everything here is private to the test: a Mosquitto (persistence on, passwords, the cloud's
ACL) and a Postgres cluster (`initdb` as the postgres user), both on free ports, plus
appliance and ingest *processes* so they can be SIGKILLed. While the appliances queue their
runs, in turn: the broker is SIGKILLed and restarted, an ingest worker is SIGKILLed, Postgres
is crashed (`pg_ctl stop -m immediate`) and restarted, an appliance is SIGKILLed and
restarted, and the network is cut (broker stopped) for `OUTAGE_S` seconds: 150 s, minutes as
the issue asks and longer than the ingest workers' session expiry (120 s); in production it
is hours or days, which changes only how many runs queue (here a few thousand).
Afterwards: every run is in Postgres exactly once, none is missing, every deletion is applied
once, every outbox is empty and nothing was rejected.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.sync.harness import Mosquitto, PgCluster, world_dir
from tests.sync.proc_appliance import run_uuid
from tests.sync.world import (
    INGEST_USER,
    PROC_PASSWORD_ENV,
    accounts,
    acl_text,
    register_devices,
)

pytestmark = [pytest.mark.slow, pytest.mark.mqtt, pytest.mark.postgres]

N_APPLIANCES = 4
TOTAL = 10_000
PER_DEVICE = TOTAL // N_APPLIANCES
RATE = 70.0  # runs/s per appliance: the runs keep coming through every failure
DELETE_EVERY = 50
OUTAGE_S = float(os.environ.get("MICROPLATE_CHAOS_OUTAGE_S", "150"))
STALL_S = 60.0
ROOT = Path(__file__).resolve().parents[2]


class Procs:
    """The test's own processes, each with its log file; secrets go in their environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cmds: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self, name: str, cmd: list[str] | None = None, password: str = "") -> None:
        if cmd is not None:
            self.cmds[name] = (cmd, os.environ | {PROC_PASSWORD_ENV: password})
        args, env = self.cmds[name]
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=log, stderr=log, env=env
        )
        log.close()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def check_alive(self) -> None:
        """Every process must run until the test stops it: one that exited fails the test
        now, with its log, instead of showing up minutes later as runs that never came."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def outbox_state(db: Path) -> tuple[int, int, int]:
    """(runs queued, entries not yet delivered, entries rejected) of one appliance.

    A plain (read-write capable) connection that only reads: after an appliance was killed,
    a read-only one cannot run SQLite's WAL recovery and may fail until the appliance itself
    reopens the file. Busy moments are retried; anything that persists is raised, not read
    as an empty outbox."""
    if not db.exists():
        return 0, 0, 0
    for attempt in range(10):
        conn = sqlite3.connect(db, timeout=10)
        try:
            queued = conn.execute("SELECT count(*) FROM outbox WHERE kind = 'run'").fetchone()[0]
            waiting = conn.execute(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND rejected_reason IS NULL"
            ).fetchone()[0]
            rejected = conn.execute(
                "SELECT count(*) FROM outbox WHERE rejected_reason IS NOT NULL"
            ).fetchone()[0]
            return int(queued), int(waiting), int(rejected)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0, 0, 0  # not migrated yet
            if attempt == 9:
                raise AssertionError(f"{db.name} stays unreadable: {exc}") from exc
            time.sleep(0.5)
        finally:
            conn.close()
    raise AssertionError("unreachable")


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    if shutil.which("runuser") is None and os.getuid() == 0:
        pytest.skip("runuser is needed to run initdb as the postgres user")
    root = world_dir("mp-sync-chaos-pg-")
    cluster = PgCluster(root)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(900)  # 3.5 min here; its own stall check (STALL_S) reports a hang first
def test_ten_thousand_runs_survive_every_failure(pg: PgCluster) -> None:
    from cloud.db import migrate

    work = world_dir("mp-sync-chaos-")
    devices = accounts(2, N_APPLIANCES // 2)
    ingest_pw = secrets.token_urlsafe(12)
    creds = {a.username: a.password for a in devices} | {INGEST_USER: ingest_pw}
    broker = Mosquitto(work / "broker", accounts=creds, acl=acl_text(devices))
    broker.start()
    url = pg.create_database("chaos")
    migrate(url)
    register_devices(url, devices)
    procs = Procs(work)
    dbs = {f"app{i}": work / f"app{i}.db" for i in range(N_APPLIANCES)}
    try:
        for i in range(2):
            procs.start(
                f"ingest{i}",
                ["-m", "tests.sync.proc_ingest", "--db", url, "--port", str(broker.port),
                 "--client-id", f"ingest-{i}"],
                password=ingest_pw,
            )  # fmt: skip
        for i, acc in enumerate(devices):
            procs.start(
                f"app{i}",
                ["-m", "tests.sync.proc_appliance", "--db", str(dbs[f"app{i}"]),
                 "--site", acc.site, "--device", acc.device,
                 "--port", str(broker.port), "--total", str(PER_DEVICE), "--rate", str(RATE),
                 "--delete-every", str(DELETE_EVERY), "--ack-timeout", "10"],
                password=acc.password,
            )  # fmt: skip

        def queued() -> int:
            return sum(outbox_state(db)[0] for db in dbs.values())

        def pause(until_queued: int, timeout: float = 60.0) -> None:
            deadline = time.monotonic() + timeout
            while queued() < until_queued and time.monotonic() < deadline:
                procs.check_alive()
                time.sleep(0.5)

        pause(1000)
        broker.kill()  # 1. the broker dies without saving
        time.sleep(2)
        broker.start()
        pause(2500)
        procs.kill("ingest0")  # 2. an ingest worker dies mid-batch
        time.sleep(2)
        procs.start("ingest0")
        pause(4000)
        pg.stop("immediate")  # 3. Postgres crashes
        time.sleep(3)
        pg.start()
        pause(5500)
        procs.kill("app1")  # 4. an appliance loses power
        time.sleep(1)
        procs.start("app1")
        pause(6500)
        broker.stop()  # 5. the network is cut: runs pile up on the appliances
        time.sleep(OUTAGE_S)
        backlog_at_reconnect = sum(outbox_state(db)[1] for db in dbs.values())
        broker.start()

        # Done when every outbox is empty; failed when nothing moves for STALL_S (a slow,
        # shared CI box gets more time as long as the backlog keeps shrinking).
        last_left, last_move, hard_stop = None, time.monotonic(), time.monotonic() + 420
        while time.monotonic() < hard_stop:
            procs.check_alive()
            states = [outbox_state(db) for db in dbs.values()]
            left = sum(PER_DEVICE - q for q, _, _ in states) + sum(w for _, w, _ in states)
            if left == 0:
                break
            if last_left is None or left < last_left:
                last_left, last_move = left, time.monotonic()
            elif time.monotonic() - last_move > STALL_S:
                break
            time.sleep(1)
        states = {name: outbox_state(db) for name, db in dbs.items()}
        diag = "\n".join(f"--- {n}\n{procs.log(n)}" for n in procs.procs)
        assert all(q == PER_DEVICE for q, _, _ in states.values()), (states, diag)
        assert all(w == 0 for _, w, _ in states.values()), (states, diag)
        assert all(r == 0 for _, _, r in states.values()), (states, diag)
        assert backlog_at_reconnect > 0  # the outage really queued runs

        expected = {run_uuid(acc.site, acc.device, i) for acc in devices for i in range(PER_DEVICE)}
        deleted = {
            run_uuid(acc.site, acc.device, i)
            for acc in devices
            for i in range(0, PER_DEVICE, DELETE_EVERY)
        }
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/chaos") as conn:
            got = [r[0] for r in conn.execute("SELECT run_id FROM runs")]
            assert len(got) == len(set(got)) == TOTAL
            assert set(got) == expected
            sql = "SELECT sum(json_array_length(wells)) FROM run_wells"
            wells = conn.execute(sql).fetchone()[0]
            assert wells == TOTAL * 96
            rows = conn.execute("SELECT count(*) FROM run_rows").fetchone()[0]
            assert rows == TOTAL * 8
            got_deleted = {
                r[0] for r in conn.execute("SELECT run_id FROM runs WHERE status = 'deleted'")
            }
            assert got_deleted == deleted
            events = conn.execute(
                "SELECT count(*), count(DISTINCT run_id) FROM run_events"
            ).fetchone()
            assert events == (len(deleted), len(deleted))  # each deletion applied once
            plates = conn.execute("SELECT sum(n_plates) FROM samples").fetchone()[0]
            assert plates == TOTAL - len(deleted)
            dead = conn.execute("SELECT count(*) FROM ingest_dead_letters").fetchone()[0]
            assert dead == 0
    finally:
        procs.stop_all()
        broker.kill()
        keep = os.environ.get("MICROPLATE_CHAOS_KEEP")
        if keep:  # for a post-mortem: the process logs and the appliance databases
            shutil.copytree(work, keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)

"""Sync benchmark: ingest throughput vs the COPY ceiling, drain after an outage, visibility.

    python bench/sync.py [--runs 5000] [--workers 1,2] [--drain-runs 10000] [--visible 60]
                          [--autosave 60] [--repeat 1]

`--repeat N` measures the COPY ceiling and each ingest figure N times, each ingest figure
as a ratio to the ceiling measured just before it; `--drain-runs 0 --visible 0` stops there.

Everything runs on private servers started here (a Mosquitto with passwords and ACL, a
Postgres cluster on a free port), with plate runs of 96 wells each. Printed figures:

1. COPY ceiling: runs/s for COPYing the same rows (runs, wells, rows) straight into Postgres;
2. ingest throughput: runs/s from Mosquitto into Postgres (validation, idempotent upsert,
   pooled samples, acks) with 1 and 2 ingest worker processes, and the ratio to the ceiling;
   with it the workers' own CPU time per run (from /proc), the figure least moved by other
   load on a shared machine;
3. drain rate: an appliance that queued `--drain-runs` runs while offline reconnects; runs/s
   until its outbox is empty (SyncWorker + ingest, end to end);
4. visibility: online, a run committed on the appliance every 200 ms; p50/p95 time until
   `GET /api/v1/runs/{id}` on the cloud API answers 200.
Targets: >= 1,000 runs/s ingest, >= 500 runs/s drain, visibility p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from rich.console import Console  # noqa: E402

from tests.sync.harness import Mosquitto, PgCluster, free_port, world_dir  # noqa: E402
from tests.sync.mqttc import publish_many  # noqa: E402
from tests.sync.world import (  # noqa: E402
    INGEST_USER,
    PROC_PASSWORD_ENV,
    accounts,
    acl_text,
    new_run,
    open_store,
    queue_runs,
    register_devices,
    sync_settings,
    template_message,
)

console = Console()


def count(pg: PgCluster, db: str, sql: str = "SELECT count(*) FROM runs") -> int:
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/{db}") as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def fresh_db(pg: PgCluster, name: str, devices) -> str:  # type: ignore[no-untyped-def]
    from cloud.db import migrate

    url = pg.create_database(name)
    migrate(url)
    register_devices(url, devices)
    return url


def start_ingest(
    url: str, port: int, password: str, n: int, work: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    # One log per worker and phase: the wait below must see this phase's "connected" line.
    tag = secrets.token_hex(3)
    for i in range(n):
        log = (work / f"ingest-{tag}-{i}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.sync.proc_ingest",
                    "--db",
                    url,
                    "--port",
                    str(port),
                    "--client-id",
                    f"bench-ingest-{i}",  # stable, as in production
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
                env=os.environ | {PROC_PASSWORD_ENV: password},
            )
        )
        log.close()
    # Until each has subscribed (its log says so), messages would queue for nobody.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = [(work / f"ingest-{tag}-{i}.log").read_text(errors="replace") for i in range(n)]
        if all("ingest connected" in t for t in logs):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def copy_ceiling(pg: PgCluster, devices, n: int, tag: str = "") -> float:  # type: ignore[no-untyped-def]
    """COPY the rows of `n` runs (runs, wells, rows) into empty tables; runs/s."""
    from cloud.ingest.copytext import line
    from cloud.ingest.fastpath import EXTRA_FIELDS, _well_line

    fresh_db(pg, f"ceiling{tag}", devices)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/ceiling{tag}") as conn:
        site_id, device_id = conn.execute("SELECT site_id, id FROM devices LIMIT 1").fetchone()
        sample_id = conn.execute(
            "INSERT INTO samples (id, site_id, sample_number, n_runs, n_plates, rows_total, "
            "n_cols, distribution, summary, flags, updated_at) VALUES (gen_random_uuid(), %s, "
            "'S-1', 0, 0, 0, 12, '{}', '{}', '{}', now()) RETURNING id",
            [site_id],
        ).fetchone()[0]
        conn.commit()
        acc = devices[0]
        template = template_message(acc.site, acc.device)
        runs, wells, rows = [], [], []
        for i in range(n):
            m = new_run(template, "S-1", seq=i)
            runs.append(
                line(
                    (
                        m.run_id,
                        0,
                        site_id,
                        device_id,
                        sample_id,
                        m.plate_id,
                        m.sample_number,
                        None,
                        m.captured_at,
                        8,
                        12,
                        "current",
                        None,
                        [],
                        m.model_dump(mode="json", include=EXTRA_FIELDS),
                        {},
                        m.processed_at,
                    )
                )
            )
            wells.append(_well_line(m))
            rows.extend(
                line(
                    (
                        str(m.run_id),
                        r.row,
                        r.label,
                        r.endpoint,
                        r.titre,
                        list(r.flags),
                        r.counted,
                        r.counted_titre,
                        r.exclusion_reason,
                    )
                )
                for r in m.rows
            )
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(
                "COPY runs (run_id, edit, site_id, device_id, sample_id, plate_id, sample_number,"
                " submission_number, read_at, n_rows, n_cols, status, superseded_by, flags, extra,"
                " image_keys, received_at) FROM STDIN"
            ) as copy:
                copy.write("".join(runs))
            with cur.copy("COPY run_wells (run_id, wells) FROM STDIN") as copy:
                copy.write("".join(wells))
            with cur.copy(
                "COPY run_rows (run_id, row, label, endpoint, titre, flags, counted, "
                "counted_titre, exclusion_reason) FROM STDIN"
            ) as copy:
                copy.write("".join(rows))
        conn.commit()
        return n / (time.perf_counter() - t0)


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float | None:
    """User + system CPU seconds the processes have used so far (Linux /proc; else None)."""
    total = 0
    try:
        for p in procs:
            # Fields after the ")" that ends the command name: utime and stime are 12 and 13.
            stat = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(stat[11]) + int(stat[12])
    except (OSError, IndexError, ValueError):
        return None
    return total / os.sysconf("SC_CLK_TCK")


IngestFigure = tuple[float, int, "float | None"]  # runs/s, runs, worker CPU s per run


def ingest_rate(pg, broker, devices, ingest_pw, n, workers, work, tag="") -> IngestFigure:  # type: ignore[no-untyped-def]
    name = f"ingest{workers}{tag}"
    url = fresh_db(pg, name, devices)
    procs = start_ingest(url, broker.port, ingest_pw, workers, work)
    try:
        per = n // len(devices)
        batches = []
        for acc in devices:
            t = template_message(acc.site, acc.device)
            from core.wire import encode_message

            batches.append(
                (
                    acc,
                    [encode_message(new_run(t, f"{name}-{i // 4:05d}", seq=i)) for i in range(per)],
                )
            )
        total = per * len(devices)
        cpu0 = cpu_seconds(procs)
        t0 = time.perf_counter()
        threads = [
            threading.Thread(
                target=publish_many,
                args=(
                    broker.port,
                    acc.username,
                    acc.password,
                    f"microplate/v1/{acc.site}/{acc.device}/runs",
                    payloads,
                ),
            )
            for acc, payloads in batches
        ]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 900
        done = 0
        while time.monotonic() < deadline:
            # Only this phase's runs (an earlier phase's message redelivered late is not
            # throughput of this one).
            done = count(pg, name, f"SELECT count(*) FROM runs WHERE sample_number LIKE '{name}-%'")
            if done >= total:
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(procs)
        for th in threads:
            th.join()
        # The workers' own CPU per run: unlike runs/s, hardly moved by what else the shared
        # machine runs (load shows as waiting, not as the workers' CPU time).
        cpu = (cpu1 - cpu0) / done if cpu0 is not None and cpu1 is not None and done else None
        return done / elapsed, done, cpu
    finally:
        stop(procs)


def drain_rate(pg, broker, devices, ingest_pw, n, work) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from edge.db import outbox
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    url = fresh_db(pg, "drain", devices)
    procs = start_ingest(url, broker.port, ingest_pw, 1, work)
    acc = devices[0]
    store = open_store(work / "drain-edge.db")
    try:
        t = template_message(acc.site, acc.device)
        for start in range(0, n, 500):  # queued while offline: the outage
            queue_runs(
                store,
                [new_run(t, f"S-{i // 4:05d}", seq=i) for i in range(start, min(n, start + 500))],
            )
        worker = SyncWorker(
            sync_settings(
                broker.port, acc, window=500, ack_timeout_s=30.0, ack_timeout_max_s=120.0
            ),
            outbox=Outbox(store),
            site_id=acc.site,
            device_id=acc.device,
        )
        t0 = time.perf_counter()
        worker.start()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and outbox.backlog(store)[0] > 0:
            time.sleep(0.2)
        elapsed = time.perf_counter() - t0
        worker.stop()
        return n / elapsed, elapsed
    finally:
        stop(procs)
        store.close()


def visibility(pg, broker, devices, ingest_pw, n, work) -> list[float]:  # type: ignore[no-untyped-def]
    import httpx
    import uvicorn

    from cloud.app import create_app
    from cloud.crud.users import create_user
    from cloud.db import make_engine, make_sessionmaker, session_scope
    from cloud.models import Role
    from cloud.settings import CloudSettings
    from edge.db.outbox import Outbox
    from edge.sync import SyncWorker

    url = fresh_db(pg, "visible", devices)
    settings = CloudSettings(database_url=url)
    engine = make_engine(settings)
    password = secrets.token_urlsafe(16)
    with session_scope(make_sessionmaker(engine)) as session:
        create_user(session, email="bench@example.org", password=password, role=Role.admin)
    engine.dispose()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    procs = start_ingest(url, broker.port, ingest_pw, 1, work)
    acc = devices[1]
    store = open_store(work / "visible-edge.db")
    worker = SyncWorker(
        sync_settings(broker.port, acc),
        outbox=Outbox(store),
        site_id=acc.site,
        device_id=acc.device,
    )
    worker.start()
    worker.link.wait_connected(30)
    latencies: list[float] = []
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                try:
                    r = client.post(
                        "/api/v1/auth/login",
                        json={"email": "bench@example.org", "password": password},
                    )
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            t = template_message(acc.site, acc.device)
            for i in range(n):
                run = new_run(t, f"V-{i:04d}", seq=i)
                t0 = time.perf_counter()
                queue_runs(store, [run])  # committed on the appliance
                worker.notify()
                while client.get(f"/api/v1/runs/{run.run_id}").status_code != 200:
                    if time.perf_counter() - t0 > 30:
                        break
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - t0)
                time.sleep(max(0.0, 0.2 - latencies[-1]))
    finally:
        worker.stop()
        stop(procs)
        server.should_exit = True
        th.join(10)
        store.close()
    return latencies


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5000, help="runs for the ingest and COPY figures")
    p.add_argument("--workers", default="1,2", help="ingest worker processes to try")
    p.add_argument("--drain-runs", type=int, default=10000)
    p.add_argument("--visible", type=int, default=60, help="runs timed for visibility")
    p.add_argument("--autosave", type=int, default=60, help="broker autosave_interval (s)")
    p.add_argument(
        "--repeat", type=int, default=1, help="repeat the COPY ceiling and ingest figures"
    )
    args = p.parse_args()
    # A terminated bench still stops its private servers (the finally block below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = world_dir("mp-sync-bench-")
    devices = accounts(2, 2)
    ingest_pw = secrets.token_urlsafe(12)
    creds = {a.username: a.password for a in devices} | {INGEST_USER: ingest_pw}
    # The broker as provisioned (ansible: autosave every 60 s), not the tests' 1 s, which
    # rewrites the whole queue to disk every second and would be measured as ingest cost.
    broker = Mosquitto(
        work / "broker", accounts=creds, acl=acl_text(devices), autosave_s=args.autosave
    )
    pg = PgCluster(world_dir("mp-sync-bench-pg-"))
    load = os.getloadavg()[0]
    console.print(f"[bold]sync bench[/] on {os.cpu_count()} CPUs, load average {load:.1f} at start")
    try:
        pg.init()
        pg.start()
        broker.start()
        for rep in range(args.repeat):
            tag = f"r{rep}" if args.repeat > 1 else ""
            if args.repeat > 1:
                console.print(f"[bold]repetition {rep + 1} of {args.repeat}[/], load average "
                              f"{os.getloadavg()[0]:.1f}")  # fmt: skip
            with console.status("COPY ceiling ..."):
                ceiling = copy_ceiling(pg, devices, args.runs, tag)
            console.print(
                f"COPY ceiling:            {ceiling:8.0f} runs/s  ({args.runs} runs x 96 wells)"
            )
            for w in [int(x) for x in args.workers.split(",") if x]:
                with console.status(f"ingest with {w} worker(s) ..."):
                    rate, done, cpu = ingest_rate(
                        pg, broker, devices, ingest_pw, args.runs, w, work, tag
                    )
                console.print(
                    f"ingest, {w} worker(s):     {rate:8.0f} runs/s  ({done} runs; "
                    f"{rate / ceiling:.1%} of the COPY ceiling; target >= 1000)"
                )
                if cpu is not None:
                    console.print(
                        f"  ingest worker CPU:     {cpu * 1000:8.3f} ms per run (user + system, "
                        f"all {w} worker(s))"
                    )
        if not args.drain_runs and not args.visible:
            console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            return 0
        with console.status("drain after an outage ..."):
            drain, secs = drain_rate(pg, broker, devices, ingest_pw, args.drain_runs, work)
        console.print(
            f"drain after outage:      {drain:8.0f} runs/s  ({args.drain_runs} runs in "
            f"{secs:.1f} s; target >= 500)"
        )
        with console.status("visibility while online ..."):
            lat = visibility(pg, broker, devices, ingest_pw, args.visible, work)
        lat.sort()
        p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
        console.print(
            f"visibility (edge commit -> cloud API 200): p50 {statistics.median(lat):.2f} s, "
            f"p95 {p95:.2f} s, max {lat[-1]:.2f} s over {len(lat)} runs (target p95 <= 2 s)"
        )
        console.print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        broker.kill()
        pg.stop("immediate")
        shutil.rmtree(pg.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

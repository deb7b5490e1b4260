"""Cloud API under load: sample list, sample detail, run detail and search over a big database.

    python bench/cloud_api.py                 # 1,000,000 runs, 50 sites, 200 devices
    python bench/cloud_api.py --runs 100000   # a quicker look
    python bench/cloud_api.py --database-url postgresql+psycopg://.../mp_bench --skip-seed

Steps: create a private database, migrate, seed it with COPY (not the ORM; indexes and
foreign keys are dropped for the load and rebuilt afterwards, as one would for a bulk import),
start the API (uvicorn, `--workers` processes), then drive it from a second process: an
open-loop generator that sends `--rate` requests/s for `--duration` s (latency counted from
the scheduled send time, so a stalled server cannot hide queueing), then a closed-loop phase
for peak throughput. `/health` at the same rate is the baseline (framework + network floor).
A last open-loop phase sends only searches (`q`: a prefix of a sample number, a submission
number or a run description, in another letter case; cloud.crud.search), and the plan and
time of one search of each kind are printed from EXPLAIN ANALYZE.
Target: p99 <= 100 ms at 200 requests/s. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG = "postgresql://postgres@127.0.0.1:5432"
PASSWORD = "bench-password-123456"
BULK = ("runs", "run_wells", "run_rows", "samples")
REQUEST_TIMEOUT = 10.0  # a request slower than this counts as failed
MAX_IN_FLIGHT = 64


# --------------------------------------------------------------------------- seeding
def _patterns(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Plate patterns computed once with core; runs reuse them (text is built per run)."""
    from core.plate import PLATE_96
    from core.titre import DilutionSettings, row_results
    from tests.cloud.factory import plate_calls

    out = []
    for _ in range(count):
        ends = [
            rng.choice([None, 0, 12]) if rng.random() < 0.04 else rng.randint(2, 9)
            for _ in range(8)
        ]
        calls = plate_calls(ends)
        rows = tuple(row_results(calls, PLATE_96, dilution=DilutionSettings()))
        doc = [
            {
                "well_id": c.well_id,
                "row": c.row,
                "col": c.col,
                "state": c.state,
                "confidence": c.confidence,
                "class_name": c.class_name,
                "box": None,
                "flags": [],
                "n_detections": c.n_detections,
            }
            for c in sorted(calls.values(), key=lambda c: (c.row, c.col))
        ]
        # COPY text of the run's wells document (run_wells.wells, migration s002).
        wells_line = "\t" + json.dumps(doc, separators=(",", ":")).replace("\\", "\\\\") + "\n"
        row_lines = []
        flags: set[str] = set()
        for r in rows:
            flags.update(r.flags)
            row_lines.append(
                f"\t{r.row}\t{r.label}\t{r.endpoint}\t{r.titre if r.titre else chr(92) + 'N'}"
                f"\t{{{','.join(r.flags)}}}\t{'t' if r.counted else 'f'}"
                f"\t{r.counted_titre if r.counted_titre else chr(92) + 'N'}"
                f"\t{r.exclusion_reason or chr(92) + 'N'}\n"
            )
        out.append({"rows": rows, "wells": wells_line, "row_lines": row_lines, "flags": flags})
    return out


def _drop_bulk_constraints(conn: Any) -> list[str]:
    """Drop indexes and constraints of the bulk tables; return the DDL that rebuilds them."""
    fks, keys, indexes = [], [], []
    for table in BULK:
        for name, ddl, kind in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
            "WHERE conrelid = %s::regclass",
            (table,),
        ):
            stmt = f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {ddl}'
            (fks if kind == "f" else keys).append((table, name, stmt))
        for name, ddl in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)",
            (table,),
        ):
            indexes.append((name, ddl))
    for table, name, _ in fks + keys:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    return [s for *_, s in keys] + [d for _, d in indexes] + [s for *_, s in fks]


def seed(url: str, *, runs: int, sites: int, devices: int, per_sample: int) -> dict[str, Any]:
    import psycopg
    from rich.progress import Progress

    from cloud.crud import devices as device_crud
    from cloud.crud import sites as site_crud
    from cloud.crud import users
    from cloud.db import make_engine, make_sessionmaker, session_scope
    from cloud.models import Role
    from cloud.settings import CloudSettings
    from core.pooling import PlateRead, pool_sample

    rng = random.Random(7)
    engine = make_engine(CloudSettings(environment="test", database_url=url))
    site_rows: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    with session_scope(make_sessionmaker(engine)) as session:
        for s in range(sites):
            site = site_crud.create_site(session, slug=f"site-{s:02d}", name=f"Site {s}")
            devs = [
                device_crud.provision_device(session, site=site, slug=f"reader-{d}").device.id
                for d in range(devices // sites)
            ]
            site_rows.append((site.id, devs))
        users.create_user(
            session, email="admin@bench.example.com", password=PASSWORD, role=Role.admin
        )
        manager_sites = [site_rows[i][0] for i in range(0, sites, max(1, sites // 5))][:5]
        users.create_user(
            session,
            email="manager@bench.example.com",
            password=PASSWORD,
            role=Role.manager,
            site_ids=manager_sites,
        )
    engine.dispose()

    libpq = url.replace("+psycopg", "")
    patterns = _patterns(64, rng)
    start = datetime(2024, 11, 1, tzinfo=timezone.utc)
    n_samples = runs // per_sample
    flocks = ("Broilers", "Layers", "Ducks", "Turkeys", "Breeders")
    with psycopg.connect(libpq, autocommit=True) as ddl_conn:
        rebuild = _drop_bulk_constraints(ddl_conn)
    # One connection per table: four COPY streams run side by side.
    conns = {t: psycopg.connect(libpq) for t in BULK}
    cols = {
        "runs": "run_id, edit, site_id, device_id, sample_id, plate_id, sample_number, "
        "submission_number, read_at, n_rows, n_cols, status, superseded_by, flags, extra, "
        "image_keys, received_at",
        "run_wells": "run_id, wells",
        "run_rows": "run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
        "exclusion_reason",
        "samples": "id, site_id, sample_number, submission_number, n_runs, n_plates, rows_total, "
        "n_cols, distribution, summary, gmt, flags, first_read_at, last_read_at, updated_at",
    }
    t0 = time.perf_counter()
    stack = contextlib.ExitStack()
    copies = {}
    for table, conn in conns.items():
        conn.execute("SET synchronous_commit = off")
        copies[table] = stack.enter_context(
            conn.cursor().copy(f"COPY {table} ({cols[table]}) FROM STDIN")
        )
    batch: dict[str, list[str]] = {t: [] for t in BULK}
    with Progress() as progress:
        task = progress.add_task("seeding runs (COPY)", total=n_samples * per_sample)
        for s in range(n_samples):
            site_id, devs = site_rows[s % sites]
            sample_id = uuid.uuid4()
            number, submission = f"S{s:07d}", f"SUB{s // 8:06d}"
            first = start + timedelta(minutes=rng.randrange(730 * 24 * 60))
            # The description search needs text that repeats like real flock names do.
            description = f"{flocks[s % len(flocks)]} house {s % 400}"
            extra = json.dumps(
                {"operator": "bench", "calibration_id": "cal-1", "description": description}
            )
            reads, flags = [], set()
            for j in range(per_sample):
                run_id, plate_id = uuid.uuid4(), uuid.uuid4()
                pat = patterns[rng.randrange(len(patterns))]
                flags |= pat["flags"]
                when = first + timedelta(minutes=7 * j)
                rid = str(run_id)
                batch["runs"].append(
                    f"{rid}\t0\t{site_id}\t{rng.choice(devs)}\t{sample_id}\t{plate_id}\t{number}"
                    f"\t{submission}\t{when.isoformat()}\t8\t12\tcurrent\t\\N"
                    f"\t{{{','.join(sorted(pat['flags']))}}}\t{extra}\t{{}}\t{when.isoformat()}\n"
                )
                batch["run_wells"].append(rid + pat["wells"])
                batch["run_rows"].append("".join(rid + line for line in pat["row_lines"]))
                reads.append(
                    PlateRead(
                        run_id=run_id,
                        sample_number=number,
                        plate_id=plate_id,
                        read_at=when,
                        rows=pat["rows"],
                    )
                )
            summary = pool_sample(number, reads, n_cols=12)
            gmt = summary.statistics.gmt
            batch["samples"].append(
                f"{sample_id}\t{site_id}\t{number}\t{submission}\t{per_sample}\t{summary.plates}"
                f"\t{summary.rows_total}\t12\t{json.dumps(summary.distribution)}"
                f"\t{summary.model_dump_json()}\t{gmt if gmt is not None else chr(92) + 'N'}"
                f"\t{{{','.join(sorted(flags))}}}\t{first.isoformat()}"
                f"\t{(first + timedelta(minutes=7 * (per_sample - 1))).isoformat()}"
                f"\t{first.isoformat()}\n"
            )
            if s % 500 == 499 or s == n_samples - 1:
                for table, lines in batch.items():
                    copies[table].write("".join(lines))
                    lines.clear()
                progress.update(task, completed=(s + 1) * per_sample)
    stack.close()
    for conn in conns.values():
        conn.commit()
        conn.close()
    loaded = time.perf_counter() - t0
    t1 = time.perf_counter()
    with psycopg.connect(libpq, autocommit=True) as conn, Progress() as progress:
        conn.execute("SET maintenance_work_mem = '1GB'")
        task = progress.add_task("rebuilding keys, indexes, foreign keys", total=len(rebuild))
        for stmt in rebuild:
            conn.execute(stmt)
            progress.advance(task)
        for table in (*BULK, "sites", "devices", "users", "user_sites"):
            conn.execute(f"VACUUM ANALYZE {table}")
    return {
        "runs": n_samples * per_sample,
        "samples": n_samples,
        "wells": n_samples * per_sample * 96,
        "load_s": loaded,
        "index_s": time.perf_counter() - t1,
        "manager_sites": manager_sites,
    }


# --------------------------------------------------------------------------- load generator
async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import quote

    import httpx

    rng = random.Random(11)
    base, headers = spec["base"], {"Authorization": f"Bearer {spec['token']}"}
    samples, runs, sites = spec["samples"], spec["runs"], spec["sites"]
    numbers = spec["numbers"]

    def pick(kind: str) -> str:
        if kind == "health":
            return "/health"
        if kind == "list":
            roll = rng.random()
            if roll < 0.4:
                return "/api/v1/samples?limit=50"
            if roll < 0.8:
                return f"/api/v1/samples?limit=50&site_id={rng.choice(sites)}"
            return f"/api/v1/samples?q={rng.choice(numbers)}"
        if kind == "search":
            return f"/api/v1/samples?limit=50&q={quote(rng.choice(spec['searches']))}"
        if kind == "sample":
            return f"/api/v1/samples/{rng.choice(samples)}"
        return f"/api/v1/runs/{rng.choice(runs)}"

    results: list[tuple[str, int, float]] = []
    # One client with one connection per worker: httpx's shared pool spends time quadratic in
    # the number of waiting requests, which would measure the generator, not the server.
    clients = [
        httpx.AsyncClient(
            base_url=base,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(MAX_IN_FLIGHT)
    ]

    async def send(client: httpx.AsyncClient, kind: str, due: float) -> None:
        try:
            code = (await client.get(pick(kind))).status_code
        except httpx.HTTPError:
            code = 0  # counted as an error, latency = time until it gave up
        # Latency from the scheduled time: waiting for a free connection counts too.
        results.append((kind, code, time.perf_counter() - due))

    async def open_loop(kinds: list[str], rate: float, seconds: float) -> float:
        queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

        async def worker(client: httpx.AsyncClient) -> None:
            while (item := await queue.get()) is not None:
                await send(client, *item)

        workers = [asyncio.create_task(worker(c)) for c in clients]
        start = time.perf_counter() + 0.2
        for i in range(int(rate * seconds)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((kinds[i % len(kinds)], due))
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return time.perf_counter() - start

    async def closed_loop(kinds: list[str], seconds: float, concurrency: int) -> float:
        stop = time.perf_counter() + seconds

        async def worker(i: int, client: httpx.AsyncClient) -> None:
            while time.perf_counter() < stop:
                await send(client, kinds[i % len(kinds)], time.perf_counter())
                i += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i, c) for i, c in enumerate(clients[:concurrency])))
        return time.perf_counter() - start

    mix = ["list", "sample", "run"]
    try:
        print("load: warm-up", flush=True)
        await open_loop(mix, spec["rate"], 3)
        results.clear()
        print("load: baseline /health", flush=True)
        base_wall = await open_loop(["health"], spec["rate"], spec["baseline_s"])
        baseline = list(results)
        results.clear()
        print("load: open loop, mix", flush=True)
        wall = await open_loop(mix, spec["rate"], spec["duration"])
        loaded = list(results)
        results.clear()
        print("load: closed loop, mix", flush=True)
        peak_wall = await closed_loop(mix, spec["peak_s"], spec["peak_concurrency"])
        peak = list(results)
        results.clear()
        print("load: open loop, search", flush=True)
        search_wall = await open_loop(["search"], spec["rate"], spec["search_s"])
        search = list(results)
    finally:
        for client in clients:
            await client.aclose()
    return {
        "baseline": baseline,
        "base_wall": base_wall,
        "loaded": loaded,
        "wall": wall,
        "peak": peak,
        "peak_wall": peak_wall,
        "search": search,
        "search_wall": search_wall,
    }


def loadgen_main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(asyncio.run(_drive(spec))))


# --------------------------------------------------------------------------- orchestration
def searches_for(numbers: list[str], submissions: list[str]) -> list[str]:
    """Queries as people type them: the start of a sample number, of a submission number or
    of a description, in another letter case. Round-robin, so every kind is in the first 3."""
    rng = random.Random(5)
    out = []
    for i in range(600):
        kind = i % 3
        if kind == 0:
            out.append(rng.choice(numbers)[:-1].lower())  # about 10 samples
        elif kind == 1 and submissions:
            out.append(rng.choice(submissions)[:-1].lower())
        else:
            flock = ("broilers", "LAYERS", "Ducks", "turkeys", "breeders")[i % 5]
            out.append(f"{flock} house {rng.randrange(40)}")
    return out


def explain_search(conn: Any, q: str, site_ids: list[Any]) -> str:
    """Execution time of the list query for `q` (as the API runs it) and the indexes used."""
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql

    from cloud.crud.queries import SampleFilter, filtered
    from cloud.crud.scope import Scope
    from cloud.models import Sample

    query = (
        filtered(
            select(Sample.id),
            scope=Scope(all_sites=False, site_ids=frozenset(site_ids)),
            flt=SampleFilter(q=q),
        )
        .order_by(Sample.last_read_at.desc(), Sample.id.desc())
        .limit(51)
    )
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    plan = [r[0] for r in conn.execute("EXPLAIN ANALYZE " + sql)]
    used = sorted({w for line in plan for w in line.split() if w.startswith("ix_")})
    took = next((line for line in plan if line.startswith("Execution Time")), "?")
    return f"{took}; indexes {', '.join(used) or 'none'}"


def db_timing(url: str, searches: list[str], site_ids: list[Any], rounds: int) -> None:
    """The list query as the API runs it (fastread.sample_page on the read engine, so psycopg
    prepares repeated statements), without HTTP: the same pages with and without a search."""
    from cloud.crud import fastread
    from cloud.crud.queries import SampleFilter
    from cloud.crud.scope import Scope
    from cloud.db import make_read_engine
    from cloud.settings import CloudSettings

    engine = make_read_engine(CloudSettings(environment="test", database_url=url))
    scope = Scope(all_sites=False, site_ids=frozenset(site_ids))
    figures = {}
    try:
        with engine.connect() as conn:
            for name, queries in (("list, no search", [None]), ("list with search", searches)):
                took = []
                for i in range(rounds):
                    flt = SampleFilter(q=queries[i % len(queries)])
                    t0 = time.perf_counter()
                    fastread.sample_page(conn, scope=scope, flt=flt, limit=50)
                    took.append(time.perf_counter() - t0)
                figures[name] = (_pct(took, 0.5), _pct(took, 0.99))
                print(
                    f"  {name:<18} p50 {figures[name][0]:6.2f} ms  p99 {figures[name][1]:6.2f} ms"
                )
    finally:
        engine.dispose()
    base, found = figures["list, no search"], figures["list with search"]
    print(
        f"  ratio search / no search: p50 {found[0] / base[0]:.1f}x, p99 {found[1] / base[1]:.1f}x"
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _report(name: str, rows: list[list[Any]], wall: float) -> dict[str, float]:
    lat = [r[2] for r in rows]
    bad = sum(1 for r in rows if r[1] != 200)
    fig = {
        "n": len(rows),
        "rps": len(rows) / wall,
        "p50": _pct(lat, 0.5),
        "p99": _pct(lat, 0.99),
        "max": max(lat) * 1000 if lat else float("nan"),
        "errors": bad,
    }
    print(
        f"  {name:<22} n={fig['n']:>6}  {fig['rps']:7.1f} req/s  p50 {fig['p50']:7.1f} ms  "
        f"p99 {fig['p99']:7.1f} ms  max {fig['max']:7.1f} ms  non-200 {bad}"
    )
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--runs-per-sample", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="use this database (no create/drop)")
    parser.add_argument("--skip-seed", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--loadgen", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(*args.loadgen)
        return 0

    import httpx
    import psycopg

    from cloud.db import migrate

    created = None
    url = args.database_url
    if url is None:
        created = f"mp_cloud_bench_{secrets.token_hex(4)}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{created}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{created}"
    server = None
    try:
        migrate(url)
        if not args.skip_seed:
            info = seed(
                url,
                runs=args.runs,
                sites=args.sites,
                devices=args.devices,
                per_sample=args.runs_per_sample,
            )
            print(
                f"seeded {info['runs']:,} runs ({info['wells']:,} wells, {info['samples']:,} "
                f"samples) in {info['load_s']:.0f} s + {info['index_s']:.0f} s of index builds"
            )
        libpq = url.replace("+psycopg", "")
        with psycopg.connect(libpq) as conn:
            counts = conn.execute(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM "
                "samples), (SELECT count(*) FROM sites), (SELECT count(*) "
                "FROM devices)"
            ).fetchone()
            msites = [
                r[0]
                for r in conn.execute(
                    "SELECT us.site_id FROM user_sites us JOIN users u ON u.id = us.user_id "
                    "WHERE u.email = 'manager@bench.example.com'"
                )
            ]
            samples = [
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM samples WHERE site_id = ANY(%s) ORDER BY random() LIMIT 5000",
                    (msites,),
                )
            ]
            numbers = [
                r[0]
                for r in conn.execute(
                    "SELECT sample_number FROM samples WHERE site_id = ANY(%s) "
                    "ORDER BY random() LIMIT 2000",
                    (msites,),
                )
            ]
            runs = [
                str(r[0])
                for r in conn.execute(
                    "SELECT run_id FROM runs TABLESAMPLE SYSTEM (5) WHERE site_id = ANY(%s) "
                    "LIMIT 5000",
                    (msites,),
                )
            ]
            submissions = [
                r[0]
                for r in conn.execute(
                    "SELECT submission_number FROM samples WHERE site_id = ANY(%s) "
                    "AND submission_number IS NOT NULL ORDER BY random() LIMIT 500",
                    (msites,),
                )
            ]
            searches = searches_for(numbers, submissions)
            print("one search of each kind (EXPLAIN ANALYZE, manager's sites):")
            for q in (searches[0], searches[1], searches[2]):
                print(f"  q={q!r}: {explain_search(conn, q, msites)}")
        print(f"database-side, {min(600, len(searches))} queries each (no HTTP):")
        db_timing(url, searches, msites, rounds=600)
        assert counts is not None
        print(
            f"database: {counts[0]:,} runs, {counts[1]:,} samples, {counts[2]} sites, "
            f"{counts[3]} devices; manager sees {len(msites)} sites"
        )
        port = 18000 + random.randrange(1000)
        env = {
            **os.environ,
            "MICROPLATE_CLOUD_DATABASE_URL": url,
            "MICROPLATE_CLOUD_ENVIRONMENT": "test",
            "MICROPLATE_CLOUD_LOG_LEVEL": "WARNING",
            "MICROPLATE_CLOUD_DB_POOL_SIZE": "20",
            "MICROPLATE_CLOUD_JWT_SECRET": secrets.token_urlsafe(48),
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "cloud.asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"email": "manager@bench.example.com", "password": PASSWORD},
        ).json()["access_token"]
        spec = {
            "base": base,
            "token": token,
            "samples": samples,
            "runs": runs,
            "sites": [str(s) for s in msites],
            "numbers": numbers,
            "searches": searches,
            "search_s": min(args.duration, 15.0),
            "rate": args.rate,
            "duration": args.duration,
            "baseline_s": 10,
            "peak_s": 10,
            "peak_concurrency": 32,
        }
        tmp = Path(f"/tmp/cloud_bench_{os.getpid()}")
        tmp.mkdir(exist_ok=True)
        (tmp / "spec.json").write_text(json.dumps(spec))
        load_before = f"{os.getloadavg()[0]:.1f}"
        subprocess.run(
            [sys.executable, __file__, "--loadgen", str(tmp / "spec.json"), str(tmp / "out.json")],
            check=True,
            cwd=ROOT,
        )
        out = json.loads((tmp / "out.json").read_text())
        print(
            f"\nmachine: {os.cpu_count()} CPUs, load average before/after the load phases: "
            f"{load_before} / {os.getloadavg()[0]:.1f}"
        )
        print(
            f"\nopen loop at {args.rate:.0f} req/s, {args.workers} API worker(s), "
            f"latency from scheduled send time:"
        )
        base_fig = _report("baseline /health", out["baseline"], out["base_wall"])
        mix = _report("mix (all three)", out["loaded"], out["wall"])
        kinds = {
            kind: _report(label, [r for r in out["loaded"] if r[0] == kind], out["wall"])
            for kind, label in (
                ("list", "sample list"),
                ("sample", "sample detail"),
                ("run", "run detail"),
            )
        }
        listed = kinds["list"]
        search = _report("search (prefix, case)", out["search"], out["search_wall"])
        print("\nclosed loop, 32 concurrent:")
        peak = _report("mix (peak)", out["peak"], out["peak_wall"])
        print(
            f"\nsearch p99 / sample list p99 = {search['p99'] / listed['p99']:.1f}x; "
            f"search p99 / baseline p99 = {search['p99'] / base_fig['p99']:.1f}x"
        )
        print(
            f"\nratios: mix p99 / baseline p99 = {mix['p99'] / base_fig['p99']:.1f}x; "
            f"mix p99 / 100 ms target = {mix['p99'] / 100:.2f}; "
            f"peak throughput / 200 req/s target = {peak['rps'] / 200:.2f}x"
        )
    finally:
        if server is not None:
            # The server runs in its own process group: stop the master and its workers.
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=15)
        if created and not args.keep:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
        elif created:
            print(f"kept database {created}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

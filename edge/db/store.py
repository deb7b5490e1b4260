"""The appliance's SQLite store: connection handling, versioned migrations, backup, checks.

- WAL, foreign keys, STRICT tables, `synchronous=FULL` (a committed run survives power loss).
- One writer: every write goes through `Store.write()`, which holds one lock around one
  connection and one `BEGIN IMMEDIATE` transaction. Readers get their own connection per thread
  (`Store.read()`), as a sqlite connection belongs to the thread that uses it.
- Migrations are numbered functions (`edge.db.migrations`); `PRAGMA user_version` records the
  last one applied. The database is copied (online backup API) before any migration touches an
  existing file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlite_utils import Database

from edge.db.migrations import MIGRATIONS

logger = logging.getLogger(__name__)


SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    pass


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None = None) -> str:
    return (dt or utcnow()).astimezone(timezone.utc).isoformat(timespec="microseconds")


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, never implicitly.
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class Store:
    def __init__(self, path: Path, backup_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.backup_dir = backup_dir or self.path.parent / "backups"
        self._write_lock = threading.RLock()
        self._writer: Database | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("SQLite refused WAL mode (got %s) for %s", mode, self.path)
        self._writer = Database(conn)

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
        if self._writer is not None:
            self._writer.conn.close()
            self._writer = None

    @property
    def version(self) -> int:
        return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Apply pending migrations; back the database up first if it already holds data."""
        applied: list[str] = []
        with self._write_lock:
            current = self.version
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"The database {self.path} is at schema version {current}, newer than this "
                    f"software ({SCHEMA_VERSION}). Install the newer version or restore a backup."
                )
            if current == SCHEMA_VERSION:
                return applied
            if current > 0:
                backup = self.backup(suffix=f"pre-migrate-v{current}")
                logger.info("backed up %s to %s before migrating", self.path, backup)
            db = self._db()
            for number in range(current + 1, SCHEMA_VERSION + 1):
                name, func = MIGRATIONS[number - 1]
                if progress:
                    progress(f"migration {number}: {name}")
                db.execute("BEGIN IMMEDIATE")
                try:
                    func(db)
                    db.execute(f"PRAGMA user_version = {number}")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                applied.append(name)
                logger.info("applied migration %d (%s)", number, name)
        return applied

    def backup(self, dest: Path | None = None, suffix: str = "backup") -> Path:
        """Consistent online copy (sqlite backup API) even while the appliance writes."""
        if dest is None:
            self.backup_dir.mkdir(parents=True, exist_ok=True)
            stamp = utcnow().strftime("%Y%m%dT%H%M%S%fZ")
            dest = self.backup_dir / f"{self.path.stem}-{stamp}-{suffix}.db"
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(str(dest))
        try:
            with self._write_lock:
                self._db().conn.backup(target)
        finally:
            target.close()
        return dest

    def check(self) -> list[str]:
        """Problems found by integrity_check and foreign_key_check (empty list: healthy)."""
        db = self.read()
        problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        for row in db.execute("PRAGMA foreign_key_check").fetchall():
            problems.append(f"foreign key violation in {row[0]} rowid {row[1]} -> {row[2]}")
        return problems

    # -- access ---------------------------------------------------------------------------
    def _db(self) -> Database:
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Database]:
        """The single writer: one lock, one IMMEDIATE transaction, committed or rolled back.

        `durable=False` skips the fsync at commit (WAL with synchronous=NORMAL): still atomic
        and safe against a crash of the process, but a power cut may undo it. Only for records
        that are re-created when lost (the CSV log: a lost entry means the CSV is written again).
        """
        with self._write_lock:
            db = self._db()
            if not durable:
                db.execute("PRAGMA synchronous = NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    # Also when COMMIT itself fails (a deferred constraint, a full disk): the
                    # one writer connection must not be left inside the transaction.
                    if db.conn.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    db.execute("PRAGMA synchronous = FULL")

    def ping(self) -> None:
        """Raise when the database cannot answer a query (readiness)."""
        self.read().execute("SELECT 1").fetchone()

    def read(self) -> Database:
        """A per-thread read connection (sees every committed write: WAL snapshot per query)."""
        db: Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                self._readers.append(conn)
            db = Database(conn)
            self._local.db = db
        return db

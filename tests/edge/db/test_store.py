from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.db import store as store_mod
from edge.db.store import Store, StoreError


def test_migrate_sets_wal_foreign_keys_and_strict(tmp_path: Path) -> None:
    s = Store(tmp_path / "m.db")
    s.open()
    assert s.migrate() == [name for name, _ in store_mod.MIGRATIONS]
    assert s.version == store_mod.SCHEMA_VERSION
    db = s.read()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert "STRICT" in db.execute("SELECT sql FROM sqlite_master WHERE name='runs'").fetchone()[0]
    with pytest.raises(sqlite3.IntegrityError), s.write() as w:  # STRICT: wrong type refused
        w.execute(
            "INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)",
            ["now", "a", "b", b"\x00"],
        )
    with pytest.raises(sqlite3.IntegrityError), s.write() as w:  # foreign key enforced
        w.execute(
            "INSERT INTO wells (run_id, well_id, row, col, state, flags) "
            "VALUES ('nope','A1',0,0,'unread','[]')"
        )
    assert s.check() == []
    assert s.migrate() == []  # idempotent
    s.close()


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    s = Store(tmp_path / "m.db")
    s.open()
    s.migrate()
    with pytest.raises(RuntimeError), s.write() as w:
        w.execute("INSERT INTO audit (at, actor, action, detail) VALUES ('t','a','x','{}')")
        raise RuntimeError("boom")
    assert s.read().execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
    s.close()


def test_backup_before_migrating_an_existing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Store(tmp_path / "m.db", tmp_path / "bk")
    s.open()
    s.migrate()
    with s.write() as w:
        w.execute("INSERT INTO audit (at, actor, action, detail) VALUES ('t','a','keep','{}')")
    s.close()

    def m002(db: object) -> None:
        db.execute("ALTER TABLE audit ADD COLUMN extra TEXT")  # type: ignore[attr-defined]

    current = len(store_mod.MIGRATIONS)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, ("extra", m002)])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", current + 1)
    s = Store(tmp_path / "m.db", tmp_path / "bk")
    s.open()
    assert s.migrate() == ["extra"]
    backups = list((tmp_path / "bk").glob(f"*pre-migrate-v{current}.db"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert old.execute("PRAGMA user_version").fetchone()[0] == current
    assert old.execute("SELECT action FROM audit").fetchall() == [("keep",)]
    old.close()
    s.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    s = Store(tmp_path / "m.db")
    s.open()
    s.migrate()
    with s.write() as w:
        w.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer"):
        s.migrate()
    s.close()

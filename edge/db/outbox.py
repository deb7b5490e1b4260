"""The durable outbox: `core.wire` messages waiting for the cloud's acknowledgement.

Entries are added inside the same transaction as the change they describe (see `edge.db.runs`);
the sync worker (`edge.sync`) drains them with `pending`, then `mark_delivered` on the cloud's
ack or `mark_rejected` when the cloud refuses a message for good.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlite_utils import Database

from edge.db.store import Store, StoreError, iso, utcnow

logger = logging.getLogger(__name__)


class OutboxEntry(BaseModel):
    id: int
    run_id: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    last_error: str | None = None

    def payload_bytes(self) -> bytes:
        """The message as it goes on the wire (what `core.wire.parse_message` takes)."""
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")


def add(db: Database, *, run_id: str, kind: str, payload: str) -> int:
    """Queue one message; call inside `Store.write()` with the change it describes."""
    cur = db.execute(
        "INSERT INTO outbox (run_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        [run_id, kind, payload, iso()],
    )
    return int(cur.lastrowid or 0)


def pending(store: Store, limit: int = 100) -> list[OutboxEntry]:
    """Oldest first, neither delivered nor rejected."""
    rows = store.read().execute(
        "SELECT id, run_id, kind, payload, created_at, attempts, last_error FROM outbox "
        "WHERE delivered_at IS NULL AND rejected_reason IS NULL ORDER BY id LIMIT ?",
        [max(0, int(limit))],
    )
    return [
        OutboxEntry(
            id=r[0],
            run_id=r[1],
            kind=r[2],
            payload=json.loads(r[3]),
            created_at=datetime.fromisoformat(r[4]),
            attempts=r[5],
            last_error=r[6],
        )
        for r in rows.fetchall()
    ]


def mark_delivered(store: Store, ids: list[int]) -> int:
    if not ids:
        return 0
    marks = ",".join("?" for _ in ids)
    with store.write() as db:
        cur = db.execute(
            f"UPDATE outbox SET delivered_at = ? WHERE id IN ({marks}) "  # noqa: S608
            "AND delivered_at IS NULL",
            [iso(), *ids],
        )
        return int(cur.rowcount)


def mark_attempt(store: Store, entry_id: int, error: str | None) -> None:
    with store.write() as db:
        db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            [error, entry_id],
        )


def mark_rejected(store: Store, entry_id: int, reason: str) -> None:
    """The cloud refused the message for good: keep it (for a person to look at), stop sending."""
    with store.write() as db:
        db.execute("UPDATE outbox SET rejected_reason = ? WHERE id = ?", [reason[:1000], entry_id])
    logger.warning("outbox entry %s rejected by the cloud: %s", entry_id, reason)


def backlog(store: Store) -> tuple[int, float | None]:
    """(entries not yet acknowledged, age in seconds of the oldest one or None)."""
    row = (
        store.read()
        .execute(
            "SELECT COUNT(*), MIN(created_at) FROM outbox "
            "WHERE delivered_at IS NULL AND rejected_reason IS NULL"
        )
        .fetchone()
    )
    count, oldest = int(row[0]), row[1]
    if oldest is None:
        return count, None
    age = (utcnow() - datetime.fromisoformat(oldest)).total_seconds()
    return count, max(0.0, age)


def rejected_count(store: Store) -> int:
    row = (
        store.read()
        .execute("SELECT COUNT(*) FROM outbox WHERE rejected_reason IS NOT NULL")
        .fetchone()
    )
    return int(row[0])


def drop_delivered(db: Database, run_id: str) -> None:
    """Forget the run's delivered entries (retention, when it deletes the run)."""
    db.execute("DELETE FROM outbox WHERE run_id = ? AND delivered_at IS NOT NULL", [run_id])


@dataclass(frozen=True)
class Head:
    id: int
    run_id: str
    kind: str
    edit: int
    created_at: datetime


def heads(store: Store, limit: int) -> list[Head]:
    """Unsettled entries, oldest first, without their payloads."""
    rows = (
        store.read()
        .execute(
            "SELECT id, run_id, kind, COALESCE(json_extract(payload, '$.edit'), 0), created_at "
            "FROM outbox WHERE delivered_at IS NULL AND rejected_reason IS NULL "
            "ORDER BY id LIMIT ?",
            [max(0, int(limit))],
        )
        .fetchall()
    )
    out = []
    for r in rows:
        try:
            edit = int(r[3])
        except (TypeError, ValueError):
            edit = 0
        out.append(Head(int(r[0]), str(r[1]), str(r[2]), edit, datetime.fromisoformat(r[4])))
    return out


def payloads(store: Store, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ",".join("?" for _ in ids)
    rows = (
        store.read()
        .execute(f"SELECT id, payload FROM outbox WHERE id IN ({marks})", ids)  # noqa: S608
        .fetchall()
    )
    return {int(r[0]): str(r[1]) for r in rows}


def unsettled_for(store: Store, run_id: str, edit: int) -> list[int]:
    """Unsettled entries of `(run_id, edit)`: an ack for something sent before a restart."""
    rows = (
        store.read()
        .execute(
            "SELECT id FROM outbox WHERE run_id = ? AND delivered_at IS NULL "
            "AND rejected_reason IS NULL AND COALESCE(json_extract(payload, '$.edit'), 0) = ?",
            [run_id, edit],
        )
        .fetchall()
    )
    return [int(r[0]) for r in rows]


def note_resent(store: Store, ids: list[int], error: str) -> None:
    """Count one more attempt for `ids` and say why (shown with the outbox in the UI)."""
    if not ids:
        return
    marks = ",".join("?" for _ in ids)
    with store.write() as db:
        db.execute(
            f"UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id IN ({marks})",  # noqa: S608
            [error[:1000], *ids],
        )


class Outbox:
    """The outbox of one store, as the sync worker drains it (`edge.ports.OutboxPort`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def folder(self) -> Path:
        """The folder holding the database (the sync worker keeps its state beside it)."""
        return self.store.path.parent

    def heads(self, limit: int) -> list[Head]:
        return heads(self.store, limit)

    def payloads(self, ids: list[int]) -> dict[int, str]:
        return payloads(self.store, ids)

    def unsettled_for(self, run_id: str, edit: int) -> list[int]:
        return unsettled_for(self.store, run_id, edit)

    def note_resent(self, ids: list[int], error: str) -> None:
        note_resent(self.store, ids, error)

    def mark_delivered(self, ids: list[int]) -> int:
        return mark_delivered(self.store, ids)

    def mark_rejected(self, entry_id: int, reason: str) -> None:
        mark_rejected(self.store, entry_id, reason)

    def backlog(self) -> tuple[int, float | None]:
        return backlog(self.store)

    def backlog_if_open(self) -> tuple[int, float | None]:
        """`backlog`, or (0, None) while the store is not open (the MQTT will is built early)."""
        try:
            return backlog(self.store)
        except (StoreError, OSError, sqlite3.Error):
            return 0, None

    def rejected_count(self) -> int:
        return rejected_count(self.store)

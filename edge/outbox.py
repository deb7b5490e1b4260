"""The durable outbox: `core.wire` messages waiting for the cloud's acknowledgement.

Entries are added inside the same transaction as the change they describe (see `edge.repo`);
the sync worker (`edge.sync`) drains them with `pending`, then `mark_delivered` on the cloud's
ack or `mark_rejected` when the cloud refuses a message for good.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlite_utils import Database

from edge.store import Store, iso, utcnow

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

"""Cheap reads of the outbox for the drain loop (writes stay in `edge.outbox`).

`edge.outbox.pending` parses every payload, which is right for a person looking at the
outbox but too slow for a loop that runs after every batch of acks: a run message is about
20 KB of JSON. Here the loop first reads only the heads (id, run, kind, edit via SQLite's
`json_extract`), picks what to send, and then fetches just those payloads as the exact text
that was committed with the run, sent as is (no decode, no re-encode).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from edge.store import Store

logger = logging.getLogger(__name__)


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

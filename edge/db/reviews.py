"""An operator's review of a run, as SQL: the run to review (with its latest wire message) and
the edit written back. Called inside one `Store.write()` transaction with the sample's
recompute, the outbox entry and the audit row.

The run's latest wire message is its newest `run` entry in the outbox: the outbox keeps every
message of a run, delivered or not, for as long as the run itself is kept (retention drops them
only with a superseded or deleted run, `edge.db.runs.release`), so it is not stored twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlite_utils import Database

from core.stats import Statistics
from core.wire import RunMessage
from edge.db import outbox
from edge.db.runs import dumps
from edge.db.store import iso


@dataclass(frozen=True)
class ReviewTarget:
    run_id: str
    plate_id: str
    sample_number: str
    edit: int
    processed_at: datetime
    deleted: bool
    superseded_by: str | None
    needs_review: bool
    # The run's latest wire message (JSON), or None when the outbox no longer has it.
    message: str | None


def review_target(db: Database, run_id: str) -> ReviewTarget | None:
    row = db.execute(
        "SELECT run_id, plate_id, sample_number, edit, processed_at, deleted_at, superseded_by, "
        "needs_review FROM runs WHERE run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        return None
    found = db.execute(
        "SELECT payload FROM outbox WHERE run_id = ? AND kind = 'run' ORDER BY id DESC LIMIT 1",
        [run_id],
    ).fetchone()
    return ReviewTarget(
        run_id=str(row[0]),
        plate_id=str(row[1]),
        sample_number=str(row[2]),
        edit=int(row[3]),
        processed_at=datetime.fromisoformat(row[4]),
        deleted=row[5] is not None,
        superseded_by=row[6],
        needs_review=bool(row[7]),
        message=str(found[0]) if found else None,
    )


def write_review(
    db: Database,
    message: RunMessage,
    *,
    payload: str,
    statistics: Statistics,
    reviewed_by: str,
    reviewed_at: datetime,
) -> None:
    """Store the reviewed edit: wells (final state, the model's call kept), rows, the run's
    counts and review state, and the outbox entry that syncs it (the run's latest message)."""
    run_id = str(message.run_id)
    counted = sum(1 for r in message.rows if r.counted)
    flagged = sum(1 for w in message.wells.values() if w.flags or w.state in ("unread", "invalid"))
    db.execute(
        "UPDATE runs SET edit = ?, distribution = ?, statistics = ?, rows_counted = ?, "
        "rows_excluded = ?, flagged_wells = ?, needs_review = ?, review_reasons = ?, "
        "reviewed_at = ?, reviewed_by = ? WHERE run_id = ?",
        [
            message.edit,
            dumps(message.distribution),
            statistics.model_dump_json(),
            counted,
            len(message.rows) - counted,
            flagged,
            int(message.needs_review),
            dumps(list(message.review_reasons)),
            iso(reviewed_at),
            reviewed_by[:128],
            run_id,
        ],
    )
    db.conn.executemany(
        "UPDATE wells SET state = ?, model_state = ? WHERE run_id = ? AND well_id = ?",
        [(w.state, w.model_state, run_id, well_id) for well_id, w in message.wells.items()],
    )
    db.execute("DELETE FROM rows WHERE run_id = ?", [run_id])
    db.conn.executemany(
        "INSERT INTO rows (run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
        "exclusion_reason, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                run_id,
                r.row,
                r.label,
                r.endpoint,
                r.titre,
                dumps(list(r.flags)),
                int(r.counted),
                r.counted_titre,
                r.exclusion_reason,
                r.model_dump_json(),
            )
            for r in message.rows
        ],
    )
    outbox.add(db, run_id=run_id, kind="run", payload=payload)


def review_queue(db: Database, limit: int) -> list[tuple[str, int]]:
    """Current runs to review, most urgent first: (run_id, unread rows). Runs held for review
    first, then runs with rows left unread, newest first within each; reviewed runs that no
    longer need it are left out."""
    rows = db.execute(
        "SELECT r.run_id, "
        "(SELECT COUNT(*) FROM rows x WHERE x.run_id = r.run_id AND x.flags LIKE '%\"unread\"%') "
        "AS unread_rows, r.needs_review FROM runs r "
        "WHERE r.deleted_at IS NULL AND r.superseded_by IS NULL "
        "AND (r.needs_review = 1 OR (r.reviewed_at IS NULL AND EXISTS (SELECT 1 FROM rows x "
        "WHERE x.run_id = r.run_id AND x.flags LIKE '%\"unread\"%'))) "
        "ORDER BY r.needs_review DESC, r.processed_at DESC LIMIT ?",
        [max(1, int(limit))],
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]

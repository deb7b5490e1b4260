"""The runs aggregate: a plate read with its wells and rows, its supersede and delete, its
pending display images, retention, and the failures log. Writes are called inside one
`Store.write()` transaction (`edge.services.commit`).

A run, its wells, its rows, the superseding of an earlier read of the same plate, the sample's
pooled summary and the outbox entries are committed together or not at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from core.titre import RowResult
from edge.db import outbox
from edge.db.store import iso

logger = logging.getLogger(__name__)


@dataclass
class RunRecord:
    run_id: str
    plate_id: str
    sample_number: str
    submission_number: str
    description: str
    operator: str
    source: str
    filename: str
    image_sha256: str
    captured_at: datetime
    processed_at: datetime
    supersedes: str | None
    model: dict[str, str]
    calibration_id: str | None
    dilution: dict[str, Any]
    timings_ms: dict[str, float]
    image_dir: str
    image_bytes: int
    # role (raw/annotated/thumbnail) -> (file name, sha256, size): the wire message's ImageRefs
    image_files: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # The plate-quality gate: held for review (rows not counted, no CSV, supersedes nothing).
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()
    reading: str | None = None


# One encoder for every value: `json.dumps` with arguments builds a new encoder per call, which
# was most of the cost of storing a run's 96 wells (two values each).
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _list_json(values: tuple[Any, ...] | list[Any]) -> str:
    """A well's or row's flags (most often none) or box as stored."""
    return _ENCODER.encode(list(values)) if values else "[]"


def current_run_for_image(
    db: Database, sha256: str, sample_number: str | None = None
) -> str | None:
    """A stored, not deleted run of exactly these image bytes (idempotent re-submission).

    With `sample_number`, only a run under that sample number: the same bytes under another
    number are a correction, read again as the same plate (its `plate_id` comes from the
    bytes), which moves the plate to the new number instead of silently keeping the old one.
    """
    if sample_number is None:
        row = db.execute(
            "SELECT run_id FROM runs WHERE image_sha256 = ? AND deleted_at IS NULL "
            "ORDER BY processed_at DESC LIMIT 1",
            [sha256],
        ).fetchone()
    else:
        row = db.execute(
            "SELECT run_id FROM runs WHERE image_sha256 = ? AND sample_number = ? "
            "AND deleted_at IS NULL ORDER BY processed_at DESC LIMIT 1",
            [sha256, sample_number],
        ).fetchone()
    return row[0] if row else None


def insert_run(
    db: Database,
    rec: RunRecord,
    *,
    wells: dict[str, Any],
    rows: list[RowResult],
    distribution: dict[str, int],
    statistics: Any,
    message_json: str,
    superseded_events: dict[str, str],
) -> list[str]:
    """Insert the run and supersede earlier current reads of the same plate.

    A run that needs review supersedes nothing: the earlier read stays the plate's current one
    until an operator re-reads the plate. `superseded_events` maps an earlier run_id to the
    outbox payload announcing it was superseded (built by the caller from `core.wire`). Returns
    the run ids superseded.
    """
    counted = sum(1 for r in rows if r.counted)
    flagged = sum(1 for w in wells.values() if w.flags or w.state in ("unread", "invalid"))
    db.execute(
        "INSERT INTO runs (run_id, plate_id, sample_number, submission_number, description, "
        "operator, source, filename, image_sha256, captured_at, processed_at, supersedes, "
        "distribution, statistics, rows_counted, rows_excluded, flagged_wells, model, "
        "calibration_id, dilution, timings, image_dir, image_bytes, needs_review, "
        "review_reasons, reading) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            rec.run_id,
            rec.plate_id,
            rec.sample_number,
            rec.submission_number,
            rec.description,
            rec.operator,
            rec.source,
            rec.filename,
            rec.image_sha256,
            iso(rec.captured_at),
            iso(rec.processed_at),
            rec.supersedes,
            dumps(distribution),
            statistics.model_dump_json(),
            counted,
            len(rows) - counted,
            flagged,
            dumps(rec.model),
            rec.calibration_id,
            dumps(rec.dilution),
            dumps(rec.timings_ms),
            rec.image_dir,
            rec.image_bytes,
            int(rec.needs_review),
            dumps(list(rec.review_reasons)),
            rec.reading,
        ],
    )
    db.conn.executemany(
        "INSERT INTO wells (run_id, well_id, row, col, state, confidence, class_name, flags, box) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (
                rec.run_id,
                w.well_id,
                w.row,
                w.col,
                w.state,
                w.confidence,
                w.class_name,
                _list_json(w.flags),
                _list_json(w.box) if w.box is not None else None,
            )
            for w in wells.values()
        ],
    )
    db.conn.executemany(
        "INSERT INTO rows (run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
        "exclusion_reason, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                rec.run_id,
                r.row,
                r.label,
                r.endpoint,
                r.titre,
                _list_json(r.flags),
                int(r.counted),
                r.counted_titre,
                r.exclusion_reason,
                r.model_dump_json(),
            )
            for r in rows
        ],
    )
    superseded = (
        []
        if rec.needs_review
        else [
            row[0]
            for row in db.execute(
                "SELECT run_id FROM runs WHERE plate_id = ? AND run_id != ? "
                "AND superseded_by IS NULL AND deleted_at IS NULL",
                [rec.plate_id, rec.run_id],
            ).fetchall()
        ]
    )
    for old in superseded:
        db.execute(
            "UPDATE runs SET superseded_by = ?, edit = edit + 1 WHERE run_id = ?",
            [rec.run_id, old],
        )
        payload = superseded_events.get(old)
        if payload is not None:
            outbox.add(db, run_id=old, kind="superseded", payload=payload)
    outbox.add(db, run_id=rec.run_id, kind="run", payload=message_json)
    return superseded


def mark_deleted(db: Database, run_id: str, *, actor: str, reason: str, payload: str) -> None:
    db.execute(
        "UPDATE runs SET deleted_at = ?, deleted_by = ?, deleted_reason = ?, edit = edit + 1 "
        "WHERE run_id = ?",
        [iso(), actor, reason, run_id],
    )
    outbox.add(db, run_id=run_id, kind="deleted", payload=payload)


def record_failure(
    db: Database,
    *,
    ticket_id: str,
    source: str,
    filename: str,
    sha256: str | None,
    code: str,
    reason: str,
) -> None:
    db.execute(
        "INSERT INTO failures (ticket_id, source, filename, image_sha256, code, reason, at) "
        "VALUES (?,?,?,?,?,?,?)",
        [ticket_id, source, filename[:255], sha256, code, reason[:1000], iso()],
    )


def deletion_target(db: Database, run_id: str) -> tuple[str, str | None, int, str] | None:
    """(sample_number, deleted_at, edit, plate_id) of the run, or None when there is none."""
    row = db.execute(
        "SELECT sample_number, deleted_at, edit, plate_id FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    return (row[0], row[1], int(row[2]), row[3]) if row else None


def current_reads_of_plate(db: Database, plate_id: str) -> list[tuple[str, int]]:
    """(run_id, edit) of the plate's reads that are neither superseded nor deleted."""
    rows = db.execute(
        "SELECT run_id, edit FROM runs WHERE plate_id = ? "
        "AND superseded_by IS NULL AND deleted_at IS NULL",
        [plate_id],
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def add_pending_images(db: Database, run_id: str, images: dict[str, bytes]) -> None:
    """Display images committed with their run, written into its folder after the commit."""
    for name, data in images.items():
        db.execute(
            "INSERT INTO pending_images (run_id, name, data) VALUES (?, ?, ?)",
            [run_id, name, data],
        )


def pending_images(db: Database, run_id: str | None = None) -> list[tuple[str, str, str, bytes]]:
    """(run_id, image_dir, name, data) of display images not yet written (of one run, or all)."""
    sql = (
        "SELECT p.run_id, r.image_dir, p.name, p.data "
        "FROM pending_images p JOIN runs r USING (run_id)"
    )
    rows = (
        db.execute(sql + " WHERE p.run_id = ?", [run_id]) if run_id else db.execute(sql)
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), bytes(r[3])) for r in rows]


def drop_pending_images(db: Database, run_id: str) -> None:
    db.execute("DELETE FROM pending_images WHERE run_id = ?", [run_id])


def image_dirs(db: Database) -> set[str]:
    """The image folder of every stored run."""
    return {str(r[0]) for r in db.execute("SELECT image_dir FROM runs").fetchall()}


def retention_rows(db: Database) -> list[tuple[str, str, int, bool, bool]]:
    """Per run: (run_id, processed_at, image_bytes, its outbox is settled, it is current)."""
    rows = db.execute(
        "SELECT r.run_id, r.processed_at, r.image_bytes, "
        "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run_id = r.run_id "
        "AND o.delivered_at IS NULL), "
        "r.superseded_by IS NULL AND r.deleted_at IS NULL FROM runs r"
    ).fetchall()
    return [(str(r[0]), str(r[1]), int(r[2]), bool(r[3]), bool(r[4])) for r in rows]


def release(db: Database, run_id: str) -> str | None:
    """Retention of one run: a current run keeps its record and loses its images
    (`image_bytes` 0); a superseded or deleted one is deleted (wells and rows cascade, its
    delivered outbox entries have served their purpose). Returns the run's image folder (for
    the caller to remove), or None when there is no such run."""
    row = db.execute(
        "SELECT image_dir, superseded_by IS NULL AND deleted_at IS NULL FROM runs WHERE run_id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        return None
    if row[1]:
        db.execute("UPDATE runs SET image_bytes = 0 WHERE run_id = ?", [run_id])
    else:
        outbox.drop_delivered(db, run_id)
        db.execute("UPDATE runs SET supersedes = NULL WHERE supersedes = ?", [run_id])
        db.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
    return str(row[0])

"""Writes of the pipeline and the facade, each called inside one `Store.write()` transaction.

A run, its wells, its rows, the superseding of an earlier read of the same plate, the sample's
pooled summary and the outbox entries are committed together or not at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlite_utils import Database

from core.pooling import PlateRead, SampleSummary, affected_samples, pool_sample
from core.titre import RowResult
from edge import outbox
from edge.store import iso

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


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


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
                dumps(list(w.flags)),
                dumps(list(w.box)) if w.box is not None else None,
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
                dumps(list(r.flags)),
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


_READ_COLUMNS = "run_id, plate_id, sample_number, processed_at, superseded_by, deleted_at"


def _reads(db: Database, where: str, params: list[Any]) -> list[PlateRead]:
    runs = db.execute(
        # Runs held for review are not part of any sample until re-read: they supersede
        # nothing and count nothing (the plate's earlier read stays current).
        f"SELECT {_READ_COLUMNS} FROM runs WHERE ({where}) AND needs_review = 0",  # noqa: S608 (fixed clauses only)
        params,
    ).fetchall()
    reads = []
    for run_id, plate_id, sample_number, processed_at, superseded_by, deleted_at in runs:
        rows = tuple(
            RowResult.model_validate_json(r[0])
            for r in db.execute(
                "SELECT data FROM rows WHERE run_id = ? ORDER BY row", [run_id]
            ).fetchall()
        )
        reads.append(
            PlateRead(
                run_id=UUID(run_id),
                sample_number=sample_number,
                plate_id=UUID(plate_id),
                read_at=datetime.fromisoformat(processed_at),
                rows=rows,
                superseded_by=UUID(superseded_by) if superseded_by else None,
                deleted=deleted_at is not None,
            )
        )
    return reads


def sample_reads(db: Database, sample_number: str) -> list[PlateRead]:
    """The sample's own reads and every other read of the same plates: `core.pooling`
    decides which read of a plate is current before matching the sample number."""
    return _reads(
        db,
        "sample_number = ? OR plate_id IN (SELECT plate_id FROM runs WHERE sample_number = ?)",
        [sample_number, sample_number],
    )


def samples_of_plates(db: Database, plate_ids: list[str]) -> set[str]:
    """Every sample holding a read of these plates (`core.pooling.affected_samples`): the
    samples a new read, a supersede or a delete of them must recompute."""
    if not plate_ids:
        return set()
    marks = ",".join("?" * len(plate_ids))
    reads = _reads(db, f"plate_id IN ({marks})", list(plate_ids))
    return affected_samples(reads, [("", UUID(p)) for p in plate_ids])


def recompute_sample(
    db: Database, sample_number: str, *, n_cols: int, protective_titre: float | None
) -> SampleSummary:
    """Pool the sample from its stored reads and mark its CSV as due."""
    reads = sample_reads(db, sample_number)
    summary = pool_sample(sample_number, reads, n_cols=n_cols, protective_titre=protective_titre)
    db.execute(
        "INSERT INTO samples (sample_number, summary, plates, runs, rows_total, updated_at, "
        "csv_dirty) VALUES (?,?,?,?,?,?,1) ON CONFLICT(sample_number) DO UPDATE SET "
        "summary=excluded.summary, plates=excluded.plates, runs=excluded.runs, "
        "rows_total=excluded.rows_total, updated_at=excluded.updated_at, csv_dirty=1",
        [
            sample_number,
            summary.model_dump_json(),
            summary.plates,
            sum(1 for r in reads if r.sample_number == sample_number),
            summary.rows_total,
            iso(),
        ],
    )
    return summary


def sample_exists(db: Database, sample_number: str) -> bool:
    row = db.execute("SELECT 1 FROM samples WHERE sample_number = ?", [sample_number])
    return row.fetchone() is not None


def mark_csv_done(db: Database, sample_number: str) -> None:
    """No CSV is due for the sample (it holds nothing counted yet)."""
    db.execute("UPDATE samples SET csv_dirty = 0 WHERE sample_number = ?", [sample_number])


def mark_deleted(db: Database, run_id: str, *, actor: str, reason: str, payload: str) -> None:
    db.execute(
        "UPDATE runs SET deleted_at = ?, deleted_by = ?, deleted_reason = ?, edit = edit + 1 "
        "WHERE run_id = ?",
        [iso(), actor, reason, run_id],
    )
    outbox.add(db, run_id=run_id, kind="deleted", payload=payload)


def dirty_samples(db: Database) -> list[str]:
    return [
        r[0]
        for r in db.execute(
            "SELECT sample_number FROM samples WHERE csv_dirty = 1 ORDER BY updated_at"
        ).fetchall()
    ]


def record_csv(
    db: Database,
    *,
    sample_number: str,
    file_name: str,
    template: str,
    sha256: str,
    written_at: datetime,
    summary_at_write: str,
) -> None:
    """Log the file and clear the dirty mark unless the sample changed meanwhile."""
    db.execute(
        "INSERT INTO csv_files (sample_number, file_name, template, sha256, written_at) "
        "VALUES (?,?,?,?,?)",
        [sample_number, file_name, template, sha256, iso(written_at)],
    )
    db.execute(
        "UPDATE samples SET csv_dirty = 0 WHERE sample_number = ? AND summary = ?",
        [sample_number, summary_at_write],
    )


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


def audit(db: Database, *, actor: str, action: str, detail: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO audit (at, actor, action, detail) VALUES (?,?,?,?)",
        [iso(), actor[:128], action[:128], dumps(detail)],
    )

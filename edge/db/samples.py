"""The samples aggregate: each sample's pooled summary, recomputed from its stored reads, and
the state of its LabWare CSV (`csv_dirty`, the files written). Called inside `Store.write()`
(or with `Store.read()` for the reads)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlite_utils import Database

from core.pooling import PlateRead, SampleSummary, affected_samples, pool_sample
from core.titre import RowResult
from edge.db.store import iso

_READ_COLUMNS = "run_id, plate_id, sample_number, processed_at, superseded_by, deleted_at"


@functools.lru_cache(maxsize=4096)
def stored_row(data: str) -> RowResult:
    """A row as stored (`rows.data`, `RowResult.model_dump_json`), validated. The sample is
    recomputed from every stored read of it on each commit, and rows repeat (a few hundred
    distinct ones: row, endpoint, flags), so each distinct text is validated once and the
    frozen result shared: the same text always gives the same row."""
    return RowResult.model_validate_json(data)


def _reads(
    db: Database, where: str, params: list[Any], *, with_rows: bool = True
) -> list[PlateRead]:
    runs = db.execute(
        # Runs held for review are not part of any sample until re-read: they supersede
        # nothing and count nothing (the plate's earlier read stays current).
        f"SELECT {_READ_COLUMNS} FROM runs WHERE ({where}) AND needs_review = 0",  # noqa: S608 (fixed clauses only)
        params,
    ).fetchall()
    rows_of: dict[str, list[RowResult]] = {str(r[0]): [] for r in runs}
    if with_rows and runs:
        # Every read's rows in one query (same clauses), not one query per read.
        for run_id, data in db.execute(
            f"SELECT x.run_id, x.data FROM rows x JOIN runs USING (run_id) WHERE ({where}) "  # noqa: S608 (fixed clauses only)
            "AND needs_review = 0 ORDER BY x.run_id, x.row",
            params,
        ).fetchall():
            rows_of[run_id].append(stored_row(data))
    reads = []
    for run_id, plate_id, sample_number, processed_at, superseded_by, deleted_at in runs:
        reads.append(
            PlateRead(
                run_id=UUID(run_id),
                sample_number=sample_number,
                plate_id=UUID(plate_id),
                read_at=datetime.fromisoformat(processed_at),
                rows=tuple(rows_of[run_id]),
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
    # Which samples hold a read is all that is asked here: the reads' rows are not loaded.
    reads = _reads(db, f"plate_id IN ({marks})", list(plate_ids), with_rows=False)
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


def summary_json(db: Database, sample_number: str) -> str | None:
    """The sample's stored summary as committed (JSON text), or None when there is none."""
    row = db.execute("SELECT summary FROM samples WHERE sample_number = ?", [sample_number])
    found = row.fetchone()
    return str(found[0]) if found else None

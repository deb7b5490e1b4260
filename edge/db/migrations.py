"""The schema, as numbered migrations: `MIGRATIONS[n - 1]` takes a database at version n - 1
to n (`Store.migrate` applies them in order and records the version in `PRAGMA user_version`).
A new table or column is a new function appended here; an applied one is never edited."""

from __future__ import annotations

from collections.abc import Callable

from sqlite_utils import Database


def _m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            plate_id TEXT NOT NULL,
            edit INTEGER NOT NULL DEFAULT 0,
            sample_number TEXT NOT NULL,
            submission_number TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            operator TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            filename TEXT NOT NULL DEFAULT '',
            image_sha256 TEXT NOT NULL,
            captured_at TEXT NOT NULL,
            processed_at TEXT NOT NULL,
            supersedes TEXT,
            superseded_by TEXT,
            deleted_at TEXT,
            deleted_by TEXT,
            deleted_reason TEXT,
            distribution TEXT NOT NULL,
            statistics TEXT NOT NULL,
            rows_counted INTEGER NOT NULL,
            rows_excluded INTEGER NOT NULL,
            flagged_wells INTEGER NOT NULL,
            model TEXT NOT NULL,
            calibration_id TEXT,
            dilution TEXT NOT NULL,
            timings TEXT NOT NULL,
            image_dir TEXT NOT NULL,
            image_bytes INTEGER NOT NULL DEFAULT 0
        ) STRICT;
        CREATE INDEX runs_sample ON runs(sample_number, processed_at);
        CREATE INDEX runs_plate ON runs(plate_id);
        CREATE INDEX runs_sha ON runs(image_sha256);
        CREATE INDEX runs_processed ON runs(processed_at);
        CREATE TABLE wells (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            well_id TEXT NOT NULL,
            row INTEGER NOT NULL,
            col INTEGER NOT NULL,
            state TEXT NOT NULL,
            confidence REAL,
            class_name TEXT,
            flags TEXT NOT NULL,
            box TEXT,
            PRIMARY KEY (run_id, well_id)
        ) STRICT;
        CREATE TABLE rows (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            label TEXT NOT NULL,
            endpoint INTEGER NOT NULL,
            titre REAL,
            flags TEXT NOT NULL,
            counted INTEGER NOT NULL,
            counted_titre REAL,
            exclusion_reason TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, row)
        ) STRICT;
        CREATE TABLE samples (
            sample_number TEXT PRIMARY KEY,
            summary TEXT NOT NULL,
            plates INTEGER NOT NULL,
            runs INTEGER NOT NULL,
            rows_total INTEGER NOT NULL,
            updated_at TEXT NOT NULL,
            csv_dirty INTEGER NOT NULL DEFAULT 1
        ) STRICT;
        CREATE TABLE csv_files (
            id INTEGER PRIMARY KEY,
            sample_number TEXT NOT NULL,
            file_name TEXT NOT NULL,
            template TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            written_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX csv_files_sample ON csv_files(sample_number, id);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at TEXT NOT NULL,
            delivered_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            rejected_reason TEXT
        ) STRICT;
        CREATE INDEX outbox_pending ON outbox(delivered_at, id);
        CREATE INDEX outbox_run ON outbox(run_id);
        CREATE TABLE failures (
            id INTEGER PRIMARY KEY,
            ticket_id TEXT NOT NULL,
            source TEXT NOT NULL,
            filename TEXT NOT NULL,
            image_sha256 TEXT,
            code TEXT NOT NULL,
            reason TEXT NOT NULL,
            at TEXT NOT NULL
        ) STRICT;
        CREATE TABLE calibration_history (
            id INTEGER PRIMARY KEY,
            grid_id TEXT,
            grid TEXT,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        ) STRICT;
        CREATE TABLE runtime_settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        ) STRICT;
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        ) STRICT;
        """
    )


def _m002_pending_images(db: Database) -> None:
    # The display images (annotated, thumbnail) of a run, committed with the run and written
    # to its image folder afterwards, off the plate's critical path; a crash in between leaves
    # them here and `Appliance.start` writes them.
    db.executescript(
        """
        CREATE TABLE pending_images (
            run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (run_id, name)
        ) STRICT;
        """
    )


def _m003_review(db: Database) -> None:
    # The plate-quality gate's verdict: a run that needs review is stored and shown but counts
    # no row, writes no CSV and supersedes nothing. `reading` is the classifier's reading mode
    # (NULL: read by the detector, or stored before this migration).
    db.executescript(
        """
        ALTER TABLE runs ADD COLUMN needs_review INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN review_reasons TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE runs ADD COLUMN reading TEXT;
        CREATE INDEX runs_review ON runs(needs_review, processed_at);
        """
    )


def _m004_operator_review(db: Database) -> None:
    # An operator's review: every well keeps the model's own call (`model_state`, set on the
    # first review) beside its final state, and the run who reviewed it last and when. The
    # next edit is built from the run's latest message in the outbox (kept as long as the run);
    # the audit row (who, which wells, before -> after) goes to `audit` with the change.
    db.executescript(
        """
        ALTER TABLE wells ADD COLUMN model_state TEXT;
        ALTER TABLE runs ADD COLUMN reviewed_at TEXT;
        ALTER TABLE runs ADD COLUMN reviewed_by TEXT;
        """
    )


MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = [
    ("initial schema", _m001_initial),
    ("pending display images", _m002_pending_images),
    ("plate-quality gate: needs_review, review_reasons, reading", _m003_review),
    (
        "operator review: wells.model_state, runs.reviewed_at/reviewed_by",
        _m004_operator_review,
    ),
]

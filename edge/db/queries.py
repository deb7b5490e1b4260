"""Read models: stored rows -> `edge.schemas` models (no writes here)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from core import present
from edge.errors import NotFound
from edge.schemas import (
    CsvState,
    Page,
    RowOut,
    RunDetail,
    RunSummary,
    SampleDetail,
    SampleSummaryOut,
    WellOut,
)

_RUN_COLS = (
    "run_id, plate_id, sample_number, submission_number, description, operator, source, "
    "filename, captured_at, processed_at, distribution, rows_counted, rows_excluded, "
    "flagged_wells, supersedes, superseded_by, image_sha256, deleted_at, needs_review, "
    "review_reasons, reading"
)


def _status(superseded_by: str | None, deleted_at: str | None) -> str:
    if deleted_at:
        return "deleted"
    if superseded_by:
        return "superseded"
    return "current"


def _summary(r: tuple[Any, ...]) -> RunSummary:
    return RunSummary(
        run_id=r[0],
        plate_id=r[1],
        sample_number=r[2],
        submission_number=r[3],
        description=r[4],
        operator=r[5],
        source=r[6],
        filename=r[7],
        captured_at=datetime.fromisoformat(r[8]),
        processed_at=datetime.fromisoformat(r[9]),
        distribution=json.loads(r[10]),
        rows_counted=r[11],
        rows_excluded=r[12],
        flagged_wells=r[13],
        supersedes=r[14],
        superseded_by=r[15],
        image_sha256=r[16],
        status=_status(r[15], r[17]),
        needs_review=bool(r[18]),
        review_reasons=json.loads(r[19]),
        reading=r[20],
    )


def list_runs(
    db: Database, *, sample_number: str | None, limit: int, offset: int
) -> Page[RunSummary]:
    where, params = ("WHERE sample_number = ?", [sample_number]) if sample_number else ("", [])
    total = db.execute(f"SELECT COUNT(*) FROM runs {where}", params).fetchone()[0]  # noqa: S608
    rows = db.execute(
        f"SELECT {_RUN_COLS} FROM runs {where} "  # noqa: S608
        "ORDER BY processed_at DESC, run_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return Page[RunSummary](
        items=[_summary(r) for r in rows], total=total, limit=limit, offset=offset
    )


def csv_state(db: Database, sample_number: str) -> CsvState | None:
    dirty = db.execute(
        "SELECT csv_dirty FROM samples WHERE sample_number = ?", [sample_number]
    ).fetchone()
    if dirty is None:
        return None
    last = db.execute(
        "SELECT file_name, template, written_at, sha256 FROM csv_files WHERE sample_number = ? "
        "ORDER BY id DESC LIMIT 1",
        [sample_number],
    ).fetchone()
    return CsvState(
        sample_number=sample_number,
        pending=bool(dirty[0]),
        file_name=last[0] if last else None,
        template=last[1] if last else None,
        written_at=datetime.fromisoformat(last[2]) if last else None,
        sha256=last[3] if last else None,
    )


def get_run(db: Database, run_id: str) -> RunDetail:
    r = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", [run_id]).fetchone()  # noqa: S608
    if r is None:
        raise NotFound(message=f"There is no run {run_id}. It may have been removed by retention.")
    extra = db.execute(
        "SELECT statistics, model, calibration_id, dilution, timings, deleted_reason, "
        "deleted_by FROM runs WHERE run_id = ?",
        [run_id],
    ).fetchone()
    wells = [
        WellOut(
            well_id=w[0],
            row=w[1],
            col=w[2],
            state=w[3],
            confidence=w[4],
            class_name=w[5],
            flags=json.loads(w[6]),
            box=json.loads(w[7]) if w[7] else None,
        )
        for w in db.execute(
            "SELECT well_id, row, col, state, confidence, class_name, flags, box FROM wells "
            "WHERE run_id = ? ORDER BY row, col",
            [run_id],
        ).fetchall()
    ]
    start = json.loads(extra[3] or "{}").get("start_dilution")
    rows = [
        RowOut(
            row=x[0],
            label=x[1],
            endpoint=x[2],
            titre=x[3],
            flags=json.loads(x[4]),
            counted=bool(x[5]),
            counted_titre=x[6],
            exclusion_reason=x[7],
            titre_text=present.titre_text(x[3], json.loads(x[4]), start_dilution=start),
        )
        for x in db.execute(
            "SELECT row, label, endpoint, titre, flags, counted, counted_titre, exclusion_reason "
            "FROM rows WHERE run_id = ? ORDER BY row",
            [run_id],
        ).fetchall()
    ]
    base = _summary(r).model_dump()
    return RunDetail(
        **base,
        wells=wells,
        rows=rows,
        statistics=json.loads(extra[0]),
        images={k: k for k in ("raw", "annotated", "thumbnail")},
        csv=csv_state(db, r[2]),
        model=json.loads(extra[1]),
        calibration_id=extra[2],
        dilution=json.loads(extra[3]),
        timings_ms=json.loads(extra[4]),
        deleted_reason=extra[5],
        deleted_by=extra[6],
    )


def _sample_out(r: tuple[Any, ...], db: Database) -> SampleSummaryOut:
    summary = json.loads(r[1])
    return SampleSummaryOut(
        sample_number=r[0],
        plates=r[2],
        run_count=r[3],
        rows_total=r[4],
        distribution=summary["distribution"],
        statistics=summary["statistics"],
        updated_at=datetime.fromisoformat(r[5]),
        csv=csv_state(db, r[0]),
    )


def list_samples(
    db: Database, *, query: str | None, limit: int, offset: int
) -> Page[SampleSummaryOut]:
    where, params = "", []
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where, params = "WHERE sample_number LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
    total = db.execute(f"SELECT COUNT(*) FROM samples {where}", params).fetchone()[0]  # noqa: S608
    cols = "sample_number, summary, plates, runs, rows_total, updated_at"
    sql = f"SELECT {cols} FROM samples {where} ORDER BY updated_at DESC LIMIT ? OFFSET ?"  # noqa: S608
    rows = db.execute(
        sql,
        [*params, limit, offset],
    ).fetchall()
    return Page[SampleSummaryOut](
        items=[_sample_out(r, db) for r in rows], total=total, limit=limit, offset=offset
    )


def get_sample(db: Database, sample_number: str) -> SampleDetail:
    r = db.execute(
        "SELECT sample_number, summary, plates, runs, rows_total, updated_at FROM samples "
        "WHERE sample_number = ?",
        [sample_number],
    ).fetchone()
    if r is None:
        raise NotFound(message=f"There is no sample {sample_number!r} on this appliance.")
    out = _sample_out(r, db)
    runs = list_runs(db, sample_number=sample_number, limit=1000, offset=0).items
    files = [
        CsvState(
            sample_number=sample_number,
            pending=False,
            file_name=f[0],
            template=f[1],
            written_at=datetime.fromisoformat(f[2]),
            sha256=f[3],
        )
        for f in db.execute(
            "SELECT file_name, template, written_at, sha256 FROM csv_files "
            "WHERE sample_number = ? ORDER BY id DESC LIMIT 100",
            [sample_number],
        ).fetchall()
    ]
    return SampleDetail(**out.model_dump(), runs=runs, csv_files=files)


def image_dir(db: Database, run_id: str) -> str:
    row = db.execute("SELECT image_dir FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise NotFound(message=f"There is no run {run_id}.")
    return str(row[0])

"""Pooled samples recomputed for the samples one ingest batch touched (same transaction).

`core.pooling.pool_sample` over each sample's stored runs: deleted runs and superseded reads
do not count, a re-read of a plate replaces the earlier read. Reads and updates are one
statement each for the whole batch, taken in sample-id order so concurrent workers lock the
same rows in the same order.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.pooling import PlateRead, pool_sample
from core.titre import RowResult

logger = logging.getLogger(__name__)


def pool_samples(session: Session, sample_ids: set[uuid.UUID], *, now: datetime) -> int:
    """Recompute the pooled figures of `sample_ids` from their stored runs."""
    ids = sorted(sample_ids, key=str)
    meta = {
        row[0]: (row[1], row[2], row[3])
        for row in session.execute(
            text(
                "SELECT s.id, s.sample_number, s.n_cols, st.protective_titre FROM samples s "
                "JOIN sites st ON st.id = s.site_id WHERE s.id = ANY(:ids) ORDER BY s.id "
                "FOR UPDATE OF s"
            ),
            {"ids": ids},
        )
    }
    runs_by_sample: dict[uuid.UUID, list[Any]] = {sid: [] for sid in ids}
    run_rows: dict[uuid.UUID, list[RowResult]] = {}
    for row in session.execute(
        text(
            "SELECT run_id, sample_id, plate_id, read_at, status, superseded_by, n_cols, "
            "submission_number FROM runs WHERE sample_id = ANY(:ids)"
        ),
        {"ids": ids},
    ):
        runs_by_sample[row[1]].append(row)
        run_rows[row[0]] = []
    for r in session.execute(
        text(
            "SELECT rr.run_id, rr.row, rr.label, rr.endpoint, rr.titre, rr.flags, rr.counted, "
            "rr.counted_titre, rr.exclusion_reason FROM run_rows rr JOIN runs r "
            "ON r.run_id = rr.run_id WHERE r.sample_id = ANY(:ids) AND r.status = 'current' "
            "ORDER BY rr.run_id, rr.row"
        ),
        {"ids": ids},
    ):
        # Stored by the ingest from validated messages: no need to validate them again.
        run_rows[r[0]].append(
            RowResult.model_construct(
                row=r[1],
                label=r[2],
                endpoint=r[3] or 0,
                titre=int(r[4]) if r[4] is not None else None,
                flags=tuple(r[5] or ()),
                counted=r[6],
                counted_titre=r[7],
                exclusion_reason=r[8],
            )
        )
    updates: list[dict[str, Any]] = []
    for sid in ids:
        if sid not in meta:
            continue
        number, n_cols, protective = meta[sid]
        runs = runs_by_sample[sid]
        live = [r for r in runs if r[4] != "deleted"]
        reads = [
            PlateRead.model_construct(
                run_id=r[0],
                sample_number=number,
                plate_id=r[2],
                read_at=r[3],
                rows=tuple(run_rows.get(r[0], ())),
                superseded_by=r[5] if r[4] == "superseded" else None,
                deleted=r[4] == "deleted",
            )
            for r in runs
        ]
        cols = max((r[6] for r in live), default=n_cols)
        summary = pool_sample(number, reads, n_cols=cols, protective_titre=protective)
        flags = sorted(
            {f for run_id in summary.run_ids for row in run_rows[run_id] for f in row.flags}
        )
        latest = max(live, key=lambda r: r[3], default=None)
        updates.append(
            {
                "id": sid,
                "n_runs": len(live),
                "n_plates": summary.plates,
                "rows_total": summary.rows_total,
                "n_cols": cols,
                "distribution": json.dumps(summary.distribution),
                "statistics": summary.statistics.model_dump_json(),
                "gmt": summary.statistics.gmt,
                "flags": flags,
                "first_read_at": min((r[3] for r in live), default=None),
                "last_read_at": latest[3] if latest is not None else None,
                "submission_number": latest[7] if latest is not None else None,
                "updated_at": now,
            }
        )
    if updates:
        session.execute(
            text(
                "UPDATE samples SET n_runs = :n_runs, n_plates = :n_plates, "
                "rows_total = :rows_total, n_cols = :n_cols, "
                "distribution = CAST(:distribution AS jsonb), "
                "statistics = CAST(:statistics AS jsonb), gmt = :gmt, "
                "flags = CAST(:flags AS varchar(32)[]), first_read_at = :first_read_at, "
                "last_read_at = :last_read_at, submission_number = :submission_number, "
                "updated_at = :updated_at WHERE id = :id"
            ),
            updates,
        )
    return len(updates)

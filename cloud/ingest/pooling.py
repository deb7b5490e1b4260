"""`cloud.crud.results.recompute_sample` for many samples at once, without the ORM.

Same rules, same stored values (`tests/sync/test_fastpath.py` compares them with the cloud's
function): each sample is pooled with `core.pooling.pool_sample` over its own runs plus the
other reads of the same plates, a plate being (device, plate_id) (a re-read under another
sample number decides which read is current; another device's run never does); its runs'
status becomes `current` or `superseded` accordingly (deleted runs stay deleted); the
sample's counts, distribution, summary, GMT, flags and read times are stored. Five queries
per batch instead of a dozen ORM round trips per sample. `tests/sync/test_pooling_property.py`
checks it against `core.pooling` on generated histories.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.pooling import PlateRead, pool_sample
from core.titre import RowResult

logger = logging.getLogger(__name__)

_RUN_FIELDS = (
    "run_id, sample_id, plate_id, site_id, device_id, sample_number, read_at, superseded_by, "
    "status, n_cols, flags"
)


def recompute_samples(session: Session, sample_ids: set[uuid.UUID]) -> int:
    ids = sorted(sample_ids)
    samples = session.execute(
        text(
            "SELECT s.id, s.site_id, s.sample_number, st.protective_titre FROM samples s "
            "LEFT JOIN sites st ON st.id = s.site_id WHERE s.id = ANY(:ids) ORDER BY s.id "
            "FOR UPDATE OF s"
        ),
        {"ids": ids},
    ).all()
    if not samples:
        return 0
    runs: dict[uuid.UUID, Any] = {}
    own: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for r in session.execute(
        text(f"SELECT {_RUN_FIELDS} FROM runs WHERE sample_id = ANY(:ids)"),  # noqa: S608
        {"ids": ids},
    ):
        runs[r.run_id] = r
        own[r.sample_id].append(r)
    plates = list({r.plate_id for r in runs.values()})
    by_plate: dict[tuple[uuid.UUID, uuid.UUID], list[Any]] = defaultdict(list)  # (plate, device)
    if plates:
        for r in session.execute(
            text(f"SELECT {_RUN_FIELDS} FROM runs WHERE plate_id = ANY(:plates)"),  # noqa: S608
            {"plates": plates},
        ):
            runs.setdefault(r.run_id, r)
            by_plate[(r.plate_id, r.device_id)].append(r)
    rows: dict[uuid.UUID, list[RowResult]] = defaultdict(list)
    if runs:
        for r in session.execute(
            text(
                "SELECT run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
                "exclusion_reason FROM run_rows WHERE run_id = ANY(:ids) ORDER BY run_id, row"
            ),
            {"ids": list(runs)},
        ):
            rows[r[0]].append(
                RowResult(
                    row=r[1],
                    label=r[2],
                    endpoint=r[3],
                    titre=r[4],
                    flags=tuple(r[5]),
                    counted=r[6],
                    counted_titre=r[7],
                    exclusion_reason=r[8],
                )
            )
    now = datetime.now(timezone.utc)
    sample_updates: list[dict[str, Any]] = []
    status_updates: list[dict[str, Any]] = []
    for sid, _site, number, protective in samples:
        mine = own.get(sid, [])
        plate_keys = {(r.plate_id, r.device_id) for r in mine}
        related = [r for k in plate_keys for r in by_plate.get(k, []) if r.sample_id != sid]
        reads = [
            PlateRead(
                run_id=r.run_id,
                sample_number=r.sample_number,
                plate_id=r.plate_id,
                read_at=r.read_at,
                rows=tuple(rows.get(r.run_id, ())),
                superseded_by=r.superseded_by,
                deleted=r.status in ("deleted", "needs_review"),
                device=str(r.device_id),
            )
            for r in mine + related
        ]
        n_cols = max((r.n_cols for r in mine), default=12)
        summary = pool_sample(number, reads, n_cols=n_cols, protective_titre=protective)
        counted = set(summary.run_ids)
        current = counted | set(summary.held_run_ids)
        flags: set[str] = set()
        live_times = []
        for r in mine:
            if r.status not in ("deleted", "needs_review"):
                status = "current" if r.run_id in current else "superseded"
                if status != r.status:
                    status_updates.append({"run_id": r.run_id, "status": status})
            if r.status != "deleted":
                live_times.append(r.read_at)
            if r.run_id in current:  # a held run's flags (e.g. why it is held) show too
                flags.update(r.flags)
            if r.run_id in counted:
                for row in rows.get(r.run_id, ()):
                    flags.update(row.flags)
        sample_updates.append(
            {
                "id": sid,
                "n_runs": len(mine),
                "n_plates": summary.plates,
                "rows_total": summary.rows_total,
                "n_cols": n_cols,
                "distribution": json.dumps(dict(summary.distribution)),
                "summary": json.dumps(summary.model_dump(mode="json")),
                "gmt": summary.statistics.gmt,
                "flags": sorted(flags),
                "first_read_at": min(live_times, default=None),
                "last_read_at": max(live_times, default=None),
                "updated_at": now,
            }
        )
    if status_updates:
        session.execute(
            text("UPDATE runs SET status = :status WHERE run_id = :run_id"), status_updates
        )
    session.execute(
        text(
            "UPDATE samples SET n_runs = :n_runs, n_plates = :n_plates, "
            "rows_total = :rows_total, n_cols = :n_cols, "
            "distribution = CAST(:distribution AS jsonb), summary = CAST(:summary AS jsonb), "
            "gmt = :gmt, flags = CAST(:flags AS varchar(32)[]), first_read_at = :first_read_at, "
            "last_read_at = :last_read_at, updated_at = :updated_at WHERE id = :id"
        ),
        sample_updates,
    )
    return len(sample_updates)

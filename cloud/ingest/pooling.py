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
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from cloud.ingest.copytext import array
from cloud.ingest.rawsql import as_sqlalchemy_errors, driver_connection
from core.pooling import PlateRead, pool_sample
from core.titre import RowResult

logger = logging.getLogger(__name__)


class _Run(NamedTuple):
    run_id: uuid.UUID
    sample_id: uuid.UUID
    plate_id: uuid.UUID
    site_id: uuid.UUID
    device_id: uuid.UUID
    sample_number: str
    read_at: datetime
    superseded_by: uuid.UUID | None
    status: str
    n_cols: int
    flags: list[str]


_RUN_FIELDS = ", ".join(_Run._fields)
_RUNS_OF_SAMPLES = f"SELECT {_RUN_FIELDS} FROM runs WHERE sample_id = ANY(%b)"  # noqa: S608
_RUNS_OF_PLATES = f"SELECT {_RUN_FIELDS} FROM runs WHERE plate_id = ANY(%b)"  # noqa: S608

# Row results as read back, by value: a plate row takes few distinct values (row, endpoint,
# flags...), so each is validated once and then shared (RowResult is frozen). Bounded.
_ROWS: dict[tuple[Any, ...], RowResult] = {}
_ROWS_MAX = 10_000


def _row_result(values: tuple[Any, ...]) -> RowResult:
    found = _ROWS.get(values)
    if found is None:
        if len(_ROWS) >= _ROWS_MAX:
            _ROWS.clear()
        row, label, endpoint, titre, flags, counted, counted_titre, why = values
        found = RowResult(
            row=row,
            label=label,
            endpoint=endpoint,
            titre=titre,
            flags=flags,
            counted=counted,
            counted_titre=counted_titre,
            exclusion_reason=why,
        )
        _ROWS[values] = found
    return found


def recompute_samples(session: Session, sample_ids: set[uuid.UUID]) -> int:
    """Pool `sample_ids` and store the results (in the session's transaction).

    Queries go through the driver with binary parameters (`%b`: no text escaping of
    thousands of array elements, JSON summaries included) and binary results; row results
    are shared by value (`_row_result`) and plate reads, built from those, are not
    validated a second time."""
    ids = sorted(sample_ids)
    conn = driver_connection(session)
    with as_sqlalchemy_errors(), conn.cursor() as cur:
        samples = cur.execute(
            "SELECT s.id, s.site_id, s.sample_number, st.protective_titre FROM samples s "
            "LEFT JOIN sites st ON st.id = s.site_id WHERE s.id = ANY(%b) ORDER BY s.id "
            "FOR UPDATE OF s",
            [ids],
            binary=True,
        ).fetchall()
        if not samples:
            return 0
        runs: dict[uuid.UUID, _Run] = {}
        own: dict[uuid.UUID, list[_Run]] = defaultdict(list)
        cur.execute(_RUNS_OF_SAMPLES, [ids], binary=True)
        for r in map(_Run._make, cur.fetchall()):
            runs[r.run_id] = r
            own[r.sample_id].append(r)
        plates = list({r.plate_id for r in runs.values()})
        by_plate: dict[tuple[uuid.UUID, uuid.UUID], list[_Run]] = defaultdict(list)
        if plates:
            cur.execute(_RUNS_OF_PLATES, [plates], binary=True)
            for r in map(_Run._make, cur.fetchall()):
                runs.setdefault(r.run_id, r)
                by_plate[(r.plate_id, r.device_id)].append(r)
        rows: dict[uuid.UUID, list[RowResult]] = defaultdict(list)
        if runs:
            cur.execute(
                "SELECT run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
                "exclusion_reason FROM run_rows WHERE run_id = ANY(%b) ORDER BY run_id, row",
                [list(runs)],
                binary=True,
            )
            for rid, row, label, endpoint, titre, row_flags, *rest in cur.fetchall():
                key = (row, label, endpoint, titre, tuple(row_flags), *rest)
                rows[rid].append(_row_result(key))
        now = datetime.now(timezone.utc)
        updates: list[tuple[object, ...]] = []
        status_ids: list[uuid.UUID] = []
        statuses: list[str] = []
        for sid, _site, number, protective in samples:
            mine = own.get(sid, [])
            plate_keys = {(r.plate_id, r.device_id) for r in mine}
            related = [r for k in plate_keys for r in by_plate.get(k, []) if r.sample_id != sid]
            reads = [
                PlateRead.model_construct(
                    run_id=r.run_id,
                    sample_number=r.sample_number,
                    plate_id=r.plate_id,
                    read_at=r.read_at,
                    rows=tuple(rows.get(r.run_id, ())),
                    superseded_by=r.superseded_by,
                    deleted=r.status in ("deleted", "needs_review"),
                    device=str(r.device_id),
                    held=None,
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
                        status_ids.append(r.run_id)
                        statuses.append(status)
                if r.status != "deleted":
                    live_times.append(r.read_at)
                if r.run_id in current:  # a held run's flags (e.g. why it is held) show too
                    flags.update(r.flags)
                if r.run_id in counted:
                    for row_result in rows.get(r.run_id, ()):
                        flags.update(row_result.flags)
            updates.append(
                (
                    sid,
                    len(mine),
                    summary.plates,
                    summary.rows_total,
                    n_cols,
                    json.dumps(dict(summary.distribution)),
                    json.dumps(summary.model_dump(mode="json")),
                    summary.statistics.gmt,
                    array(sorted(flags)),
                    min(live_times, default=None),
                    max(live_times, default=None),
                )
            )
        if status_ids:
            cur.execute(
                "UPDATE runs SET status = v.status FROM unnest(%b::uuid[], %b::text[]) "
                "AS v(run_id, status) WHERE runs.run_id = v.run_id",
                [status_ids, statuses],
            )
        # One statement for every sample of the batch (one array per column).
        columns = list(zip(*updates, strict=True))
        cur.execute(
            "UPDATE samples SET n_runs = v.n_runs, n_plates = v.n_plates, "
            "rows_total = v.rows_total, n_cols = v.n_cols, distribution = v.distribution::jsonb, "
            "summary = v.summary::jsonb, gmt = v.gmt, flags = v.flags::varchar(32)[], "
            "first_read_at = v.first_read_at, last_read_at = v.last_read_at, updated_at = %b "
            "FROM unnest(%b::uuid[], %b::int[], %b::int[], %b::int[], %b::int[], %b::text[], "
            "%b::text[], %b::float8[], %b::text[], %b::timestamptz[], %b::timestamptz[]) "
            "AS v(id, n_runs, n_plates, rows_total, n_cols, distribution, summary, gmt, flags, "
            "first_read_at, last_read_at) WHERE samples.id = v.id",
            [now, *(list(c) for c in columns)],
        )
    return len(updates)

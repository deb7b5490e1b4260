"""The bulk path for the common case: a batch of plain new runs, written with COPY.

`cloud.crud.results.upsert_run` does one ORM flush per run and pools the run's sample at
once: right for one message, far too slow for a backlog (tens of runs a second). A run is
*plain* when it is new (its id is not stored), supersedes nothing and has no event waiting
for it. For those this module writes exactly the rows `upsert_run` would write (the same
field mapping; `tests/sync/test_fastpath.py` compares the two row by row) with one COPY per
table, then pools each affected sample once (`cloud.ingest.pooling`, the batched twin of the
cloud's `recompute_sample`) and notifies dashboards the same way. Anything else goes
through `upsert_run`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.broadcast import CHANNEL
from cloud.crud.results import well_document
from cloud.ingest.copytext import COPY_ESCAPES, line
from cloud.ingest.pooling import recompute_samples
from cloud.ingest.rawsql import as_sqlalchemy_errors, driver_connection
from cloud.models import Device
from cloud.storage import run_image_keys
from core.plate import plate_format
from core.titre import RowResult
from core.wire import RunMessage

logger = logging.getLogger(__name__)

# What upsert_run keeps of a message in `runs.extra` (the rest has columns or detail tables).
EXTRA_FIELDS = {
    "description",
    "operator",
    "processed_at",
    "model",
    "calibration_id",
    "dilution",
    "policy",
    "min_confidence",
    "distribution",
    "supersedes",
    "reading",
}
_RUN_COLUMNS = (
    "run_id, edit, site_id, device_id, sample_id, plate_id, sample_number, submission_number, "
    "read_at, n_rows, n_cols, status, superseded_by, flags, extra, image_keys, received_at, "
    "review_reasons"
)


Stored = dict[uuid.UUID, tuple[int, uuid.UUID]]


def plain_runs(
    session: Session, runs: Sequence[tuple[RunMessage, Device]]
) -> tuple[list[tuple[RunMessage, Device]], Stored]:
    """The runs of a batch that may take the bulk path (first occurrence of each id), and
    `{run_id: (edit, device id)}` of the batch's runs that are already stored."""
    ids = list({m.run_id for m, _ in runs})
    if not ids:
        return [], {}
    stored: Stored = {
        r[0]: (r[1], r[2])
        for r in session.execute(
            text("SELECT run_id, edit, device_id FROM runs WHERE run_id = ANY(:ids)"),
            {"ids": ids},
        )
    }
    waiting = {
        r[0]
        for r in session.execute(
            text("SELECT DISTINCT run_id FROM run_events WHERE run_id = ANY(:ids)"), {"ids": ids}
        )
    }
    chosen: list[tuple[RunMessage, Device]] = []
    seen: set[uuid.UUID] = set()
    for msg, device in runs:
        if msg.run_id in seen or msg.run_id in stored or msg.run_id in waiting:
            continue
        # A reviewed run (an operator's edit) has columns the COPY does not write.
        if msg.supersedes is not None or msg.review is not None or device.status != "active":
            continue
        seen.add(msg.run_id)
        chosen.append((msg, device))
    return chosen, stored


def insert_plain_runs(
    session: Session, runs: Sequence[tuple[RunMessage, Device]], *, now: datetime
) -> int:
    """Write `runs` (all plain), pool their samples, notify; returns the number written."""
    if not runs:
        return 0
    sample_ids = _ensure_samples(session, runs, now=now)
    run_lines: list[str] = []
    well_lines: list[str] = []
    row_lines: list[str] = []
    events: list[str] = []
    for msg, device in runs:
        fmt = plate_format(msg.plate_format)
        sample_id = sample_ids[(device.site_id, msg.sample_number)]
        run_lines.append(
            line(
                (
                    msg.run_id,
                    msg.edit,
                    device.site_id,
                    device.id,
                    sample_id,
                    msg.plate_id,
                    msg.sample_number,
                    msg.submission_number,
                    msg.captured_at,
                    fmt.rows,
                    fmt.cols,
                    "needs_review" if msg.needs_review else "current",
                    None,
                    list(msg.flags),
                    msg.model_dump(mode="json", include=EXTRA_FIELDS),
                    run_image_keys(
                        site=device.site.slug,
                        device=device.slug,
                        run_id=str(msg.run_id),
                        roles=(img.role for img in msg.images),
                    ),
                    now,
                    list(msg.review_reasons),
                )
            )
        )
        well_lines.append(_well_line(msg))
        rid = str(msg.run_id)
        row_lines.extend(f"{rid}\t{_row_text(r)}" for r in msg.rows)
        events.append(
            json.dumps(
                {
                    "type": "run",
                    "site_id": str(device.site_id),
                    "device_id": str(device.id),
                    "run_id": rid,
                    "sample_id": str(sample_id),
                    "sample_number": msg.sample_number,
                },
                separators=(",", ":"),
            )
        )
    conn = driver_connection(session)
    with as_sqlalchemy_errors(), conn.cursor() as cur:
        with cur.copy(f"COPY runs ({_RUN_COLUMNS}) FROM STDIN") as copy:
            copy.write("".join(run_lines))
        with cur.copy("COPY run_wells (run_id, wells) FROM STDIN") as copy:
            copy.write("".join(well_lines))
        with cur.copy(
            "COPY run_rows (run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
            "exclusion_reason) FROM STDIN"
        ) as copy:
            copy.write("".join(row_lines))
    affected = set(sample_ids.values())
    keys = sorted({(d.id, m.plate_id) for m, d in runs})
    # Re-reads of the same plate (same device: docs/sync.md, "Plate identity") under another
    # sample number change that sample too (`core.pooling.affected_samples`).
    affected |= {
        r[0]
        for r in session.execute(
            text(
                "SELECT DISTINCT sample_id FROM runs WHERE (device_id, plate_id) IN "
                "(SELECT * FROM unnest(CAST(:devices AS uuid[]), CAST(:plates AS uuid[])))"
            ),
            {"devices": [k[0] for k in keys], "plates": [k[1] for k in keys]},
        )
    }
    recompute_samples(session, affected)
    with as_sqlalchemy_errors(), conn.cursor() as cur:
        # Binary parameters: the JSON payloads go as they are, not quote-escaped into a literal.
        cur.execute("SELECT pg_notify(%b, p) FROM unnest(%b::text[]) AS p", [CHANNEL, events])
    return len(runs)


# A plate row takes few distinct values: its COPY text (after the run id) is kept by value
# (RowResult is frozen, so hashable). Bounded.
_ROW_TEXT: dict[RowResult, str] = {}
_ROW_TEXT_MAX = 10_000


def _row_text(r: RowResult) -> str:
    found = _ROW_TEXT.get(r)
    if found is None:
        if len(_ROW_TEXT) >= _ROW_TEXT_MAX:
            _ROW_TEXT.clear()
        found = line(
            (
                r.row,
                r.label,
                r.endpoint,
                r.titre,
                list(r.flags),
                r.counted,
                r.counted_titre,
                r.exclusion_reason,
            )
        )
        _ROW_TEXT[r] = found
    return found


def _well_line(msg: RunMessage) -> str:
    """The COPY line of a run's wells document (`cloud.crud.results.well_document`, compact
    JSON; COPY's own escapes applied on top)."""
    doc = orjson.dumps(well_document(msg)).decode()
    if "\\" in doc:  # JSON text has no raw tab or newline; only its escapes need COPY's
        doc = doc.translate(COPY_ESCAPES)
    return f"{msg.run_id}\t{doc}\n"


def _ensure_samples(
    session: Session, runs: Sequence[tuple[RunMessage, Device]], *, now: datetime
) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    latest_sub: dict[tuple[uuid.UUID, str], str | None] = {}
    for msg, device in runs:
        key = (device.site_id, msg.sample_number)
        if msg.submission_number or key not in latest_sub:
            latest_sub[key] = msg.submission_number or latest_sub.get(key)
    # One lock order for the insert and the row locks: (site, sample number), as Postgres
    # sorts them (uuid, then text in "C" order), so concurrent workers queue, not deadlock.
    keys = sorted(latest_sub)
    params: dict[str, Any] = {
        "now": now,
        "sites": [k[0] for k in keys],
        "numbers": [k[1] for k in keys],
    }
    session.execute(
        text(
            "INSERT INTO samples (id, site_id, sample_number, n_runs, n_plates, rows_total, "
            "n_cols, distribution, summary, flags, updated_at) "
            "SELECT gen_random_uuid(), s, n, 0, 0, 0, 12, '{}'::jsonb, '{}'::jsonb, "
            "'{}'::varchar(32)[], :now FROM unnest(CAST(:sites AS uuid[]), "
            "CAST(:numbers AS text[])) AS t(s, n) "
            "ON CONFLICT ON CONSTRAINT uq_samples_site_sample DO NOTHING"
        ),
        params,
    )
    found = {
        (r[1], r[2]): r[0]
        for r in session.execute(
            text(
                "SELECT id, site_id, sample_number FROM samples WHERE (site_id, sample_number) "
                "IN (SELECT * FROM unnest(CAST(:sites AS uuid[]), CAST(:numbers AS text[]))) "
                'ORDER BY site_id, sample_number COLLATE "C" FOR UPDATE'
            ),
            params,
        )
    }
    subs = [(found[k], latest_sub[k]) for k in keys if latest_sub[k]]
    if subs:
        # upsert_run: a run with a submission number sets its sample's.
        session.execute(
            text(
                "UPDATE samples SET submission_number = v.sub FROM unnest(CAST(:ids AS uuid[]), "
                "CAST(:subs AS text[])) AS v(id, sub) WHERE samples.id = v.id"
            ),
            {"ids": [s[0] for s in subs], "subs": [s[1] for s in subs]},
        )
    return found

"""Set-based, idempotent writes of one ingest batch (runs, wells, rows, events, pooled samples).

The same rules as the cloud's per-run data access (`cloud.models.results`): a run is keyed by
its edge-minted `run_id`; a message whose `edit` is not newer than the stored one changes
nothing (duplicates are harmless); a run that belongs to another device is refused; events
(`deleted`, `superseded`) apply once per `(run_id, edit)`; every sample a batch touched is
pooled again with `core.pooling.pool_sample` in the same transaction. Per batch there is one
statement per table (multi-row INSERT ... ON CONFLICT, COPY for wells and rows) instead of
one ORM flush per run: that is what lets one worker ingest well over 1,000 plates a second.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.orm import Session

from cloud.ingest.copytext import COPY_ESCAPES, line
from cloud.ingest.pooling import pool_samples
from cloud.ingest.validate import Accepted, Refused
from cloud.models import Device
from core.wire import DeviceStatus, RunEvent, RunMessage

logger = logging.getLogger(__name__)

_RUN_COLUMN_LIST = [
    "run_id",
    "edit",
    "site_id",
    "device_id",
    "sample_id",
    "plate_id",
    "sample_number",
    "submission_number",
    "read_at",
    "n_rows",
    "n_cols",
    "status",
    "superseded_by",
    "flags",
    "extra",
    "image_keys",
    "received_at",
]
_RUN_COLUMNS = ", ".join(_RUN_COLUMN_LIST)
_RUN_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in _RUN_COLUMN_LIST if c != "run_id")
_EXTRA_EXCLUDE = {
    "schema_version",
    "kind",
    "run_id",
    "edit",
    "device_id",
    "site_id",
    "plate_id",
    "sample_number",
    "submission_number",
    "wells",
    "rows",
    "flags",
    "images",
}


@dataclass
class WriteResult:
    refused: list[Refused] = field(default_factory=list)
    runs_written: int = 0
    events_applied: int = 0
    samples_pooled: int = 0


def _raw_conn(session: Session) -> Any:
    return session.connection().connection.driver_connection


def write_batch(session: Session, items: Sequence[Accepted], *, now: datetime) -> WriteResult:
    result = WriteResult()
    runs = [i for i in items if isinstance(i.message, RunMessage)]
    events = [i for i in items if isinstance(i.message, RunEvent)]
    statuses = [i for i in items if isinstance(i.message, DeviceStatus)]
    affected: set[uuid.UUID] = set()
    if runs:
        _write_runs(session, runs, now=now, result=result, affected=affected)
    if events:
        _apply_events(session, events, now=now, result=result, affected=affected)
    if affected:
        result.samples_pooled = pool_samples(session, affected, now=now)
    _touch_devices(session, items, statuses, now=now)
    return result


def _write_runs(
    session: Session,
    items: Sequence[Accepted],
    *,
    now: datetime,
    result: WriteResult,
    affected: set[uuid.UUID],
) -> None:
    newest: dict[uuid.UUID, Accepted] = {}
    for item in items:
        msg = item.message
        assert isinstance(msg, RunMessage)
        held = newest.get(msg.run_id)
        if held is None or msg.edit > held.message.edit:  # type: ignore[union-attr]
            newest[msg.run_id] = item
    existing = {
        row[0]: (row[1], row[2], row[3])
        for row in session.execute(
            text(
                "SELECT run_id, edit, device_id, sample_id FROM runs "
                "WHERE run_id = ANY(:ids) FOR UPDATE"
            ),
            {"ids": list(newest)},
        )
    }
    to_write: list[tuple[Accepted, RunMessage]] = []
    replaced: list[uuid.UUID] = []
    for run_id, item in newest.items():
        msg = item.message
        assert isinstance(msg, RunMessage)
        stored = existing.get(run_id)
        if stored is not None:
            edit, device_id, sample_id = stored
            if device_id != item.device.id:
                result.refused.append(_refuse(item, "run_id: the run belongs to another device"))
                continue
            if edit >= msg.edit:
                continue  # already stored (a duplicate or an older edit): nothing to do
            replaced.append(run_id)
            affected.add(sample_id)
        to_write.append((item, msg))
    if not to_write:
        return
    sample_ids = _ensure_samples(session, to_write, now=now)
    if replaced:
        session.execute(text("DELETE FROM run_wells WHERE run_id = ANY(:ids)"), {"ids": replaced})
        session.execute(text("DELETE FROM run_rows WHERE run_id = ANY(:ids)"), {"ids": replaced})
    run_lines = []
    for item, msg in to_write:
        sample_id = sample_ids[(item.device.site_id, msg.sample_number)]
        affected.add(sample_id)
        run_lines.append(
            line(
                (
                    msg.run_id,
                    msg.edit,
                    item.device.site_id,
                    item.device.id,
                    sample_id,
                    msg.plate_id,
                    msg.sample_number,
                    msg.submission_number,
                    msg.processed_at,
                    len(msg.rows),
                    max(1, len(msg.distribution) - 1),
                    "current",
                    None,
                    list(msg.flags),
                    msg.model_dump(mode="json", exclude=_EXTRA_EXCLUDE),
                    {img.role: img.key for img in msg.images},
                    now,
                )
            )
        )
    conn = _raw_conn(session)
    with conn.cursor() as cur:
        # A staging table per connection; ON COMMIT DELETE ROWS empties it after each batch.
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_runs_in "
            "(LIKE runs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY ingest_runs_in ({_RUN_COLUMNS}) FROM STDIN") as copy:
            copy.write("".join(run_lines))
        cur.execute(
            # The column lists are constants of this module, not input.
            f"INSERT INTO runs ({_RUN_COLUMNS}) SELECT {_RUN_COLUMNS} FROM ingest_runs_in "  # noqa: S608
            f"ON CONFLICT (run_id) DO UPDATE SET {_RUN_UPDATES} WHERE runs.edit < excluded.edit "
            "RETURNING run_id"
        )
        written = {row[0] for row in cur.fetchall()}
        result.runs_written += len(written)
        messages = [m for _, m in to_write if m.run_id in written]
        well_lines: list[str] = []
        row_lines: list[str] = []
        for msg in messages:
            well_lines.extend(_well_lines(msg))
            rid = str(msg.run_id)
            row_lines.extend(
                line(
                    (
                        rid,
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
                for r in msg.rows
            )
        with cur.copy(
            "COPY run_wells (run_id, well_id, row, col, state, confidence, class_name, box, flags)"
            " FROM STDIN"
        ) as copy:
            copy.write("".join(well_lines))
        with cur.copy(
            "COPY run_rows (run_id, row, label, endpoint, titre, flags, counted, counted_titre, "
            "exclusion_reason) FROM STDIN"
        ) as copy:
            copy.write("".join(row_lines))


def _well_lines(msg: RunMessage) -> list[str]:
    """COPY lines of a run's wells, specialised: 96 of them per plate is the hot loop.

    Every text value here is a validated literal (well id, state, flags) except the class
    name, which is escaped; numbers are written with repr (exact round trip).
    """
    rid = str(msg.run_id)
    out = []
    for well_id, w in msg.wells.items():
        conf = "\\N" if w.confidence is None else repr(w.confidence)
        name = "\\N" if w.class_name is None else w.class_name.translate(COPY_ESCAPES)
        box = "\\N" if w.box is None else "{" + ",".join(map(repr, w.box)) + "}"
        flags = "{" + ",".join(w.flags) + "}"
        row = ord(well_id[0]) - 65
        col = int(well_id[1:]) - 1
        out.append(f"{rid}\t{well_id}\t{row}\t{col}\t{w.state}\t{conf}\t{name}\t{box}\t{flags}\n")
    return out


def _ensure_samples(
    session: Session, items: Sequence[tuple[Accepted, RunMessage]], *, now: datetime
) -> dict[tuple[uuid.UUID, str], uuid.UUID]:
    keys: dict[tuple[uuid.UUID, str], RunMessage] = {}
    for item, msg in items:
        keys[(item.device.site_id, msg.sample_number)] = msg
    # Sorted: concurrent workers take the unique-index locks in one order (no deadlock).
    ordered = sorted(keys.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    session.execute(
        text(
            "INSERT INTO samples (id, site_id, sample_number, submission_number, n_runs, "
            "n_plates, rows_total, n_cols, distribution, statistics, flags, updated_at) "
            "SELECT gen_random_uuid(), s, n, sub, 0, 0, 0, c, '{}'::jsonb, '{}'::jsonb, "
            "'{}'::varchar(32)[], :now FROM unnest(CAST(:sites AS uuid[]), "
            "CAST(:numbers AS text[]), CAST(:subs AS text[]), CAST(:cols AS int[])) "
            "AS t(s, n, sub, c) ON CONFLICT ON CONSTRAINT uq_samples_site_sample DO NOTHING"
        ),
        {
            "now": now,
            "sites": [k[0] for k, _ in ordered],
            "numbers": [k[1] for k, _ in ordered],
            "subs": [m.submission_number for _, m in ordered],
            "cols": [max(1, len(m.distribution) - 1) for _, m in ordered],
        },
    )
    found = session.execute(
        text(
            "SELECT id, site_id, sample_number FROM samples "
            "WHERE (site_id, sample_number) IN "
            "(SELECT * FROM unnest(CAST(:sites AS uuid[]), CAST(:numbers AS text[])))"
        ),
        {"sites": [k[0] for k in keys], "numbers": [k[1] for k in keys]},
    )
    return {(row[1], row[2]): row[0] for row in found}


def _apply_events(
    session: Session,
    items: Sequence[Accepted],
    *,
    now: datetime,
    result: WriteResult,
    affected: set[uuid.UUID],
) -> None:
    ids = sorted({i.message.run_id for i in items}, key=str)  # type: ignore[union-attr]
    runs = {
        row[0]: [row[1], row[2], row[3]]
        for row in session.execute(
            text(
                "SELECT run_id, edit, device_id, sample_id FROM runs "
                "WHERE run_id = ANY(:ids) ORDER BY run_id FOR UPDATE"
            ),
            {"ids": ids},
        )
    }
    ordered = sorted(items, key=lambda i: (str(i.message.run_id), i.message.edit))  # type: ignore[union-attr]
    for item in ordered:
        ev = item.message
        assert isinstance(ev, RunEvent)
        held = runs.get(ev.run_id)
        if held is None:
            # The appliance sends a run's events only after the run's own ack, so an unknown
            # run means its run message was refused: this event cannot apply either.
            result.refused.append(_refuse(item, "run_id: no such run in the cloud"))
            continue
        edit, device_id, sample_id = held
        if device_id != item.device.id:
            result.refused.append(_refuse(item, "run_id: the run belongs to another device"))
            continue
        if edit >= ev.edit:
            continue  # applied before
        status = "deleted" if ev.kind == "deleted" else "superseded"
        session.execute(
            text(
                "UPDATE runs SET status = :status, edit = :edit, "
                "superseded_by = COALESCE(:by, superseded_by) WHERE run_id = :run_id"
            ),
            {"status": status, "edit": ev.edit, "by": ev.superseded_by, "run_id": ev.run_id},
        )
        session.execute(
            text(
                "INSERT INTO run_events (run_id, edit, kind, applied_at, detail) "
                "VALUES (:run_id, :edit, :kind, :at, CAST(:detail AS jsonb))"
            ),
            {
                "run_id": ev.run_id,
                "edit": ev.edit,
                "kind": ev.kind,
                "at": now,
                "detail": ev.model_dump_json(include={"at", "reason", "superseded_by"}),
            },
        )
        held[0] = ev.edit
        affected.add(sample_id)
        result.events_applied += 1


def _touch_devices(
    session: Session, items: Sequence[Accepted], statuses: Sequence[Accepted], *, now: datetime
) -> None:
    latest: dict[uuid.UUID, DeviceStatus] = {}
    for item in statuses:
        msg = item.message
        assert isinstance(msg, DeviceStatus)
        held = latest.get(item.device.id)
        if held is None or msg.at >= held.at:
            latest[item.device.id] = msg
    seen = sorted({i.device.id for i in items}, key=str)
    if seen:
        session.execute(
            text("UPDATE devices SET last_seen_at = :now WHERE id = ANY(:ids)"),
            {"now": now, "ids": seen},
        )
    for device_id, status in sorted(latest.items(), key=lambda kv: str(kv[0])):
        session.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(last_status=status.model_dump(mode="json")),
        )


def _refuse(item: Accepted, reason: str) -> Refused:
    msg = item.message
    return Refused(
        item.incoming,
        reason,
        item.device.site,
        item.device.slug,
        getattr(msg, "run_id", None),
        getattr(msg, "edit", None),
    )

"""Results: idempotent upserts from the wire format and pooled-sample recomputation.

`upsert_run` and `apply_event` are what the MQTT ingest worker calls, one message per
transaction: both are idempotent on (run_id, edit), and both recompute every affected pooled
sample (`core.pooling.pool_sample` over the sample's plates) before returning, so the sample
never disagrees with its runs.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from cloud.broadcast import notify
from cloud.crud import pending
from cloud.models import Device, DeviceEvent, Run, RunRow, RunWell, Sample, Site
from cloud.security import utcnow
from cloud.storage import run_image_keys
from core.plate import plate_format
from core.pooling import PlateRead, SampleSummary, pool_sample
from core.titre import RowResult
from core.wire import DeviceStatus, RunEvent, RunMessage

logger = logging.getLogger(__name__)

# Run statuses that never count in a sample (and that pooling does not rewrite).
HELD = ("deleted", "needs_review")


class ResultError(ValueError):
    """A message that cannot be applied (wrong device, unknown run); safe to show or nack."""


@dataclass(frozen=True)
class Applied:
    status: Literal["applied", "duplicate"]
    run_id: uuid.UUID
    sample_id: uuid.UUID | None


def _sample_for(session: Session, *, site_id: uuid.UUID, sample_number: str) -> Sample:
    # Insert-or-nothing first, so two workers creating one sample never collide.
    session.execute(
        pg_insert(Sample)
        .values(
            id=uuid.uuid4(),
            site_id=site_id,
            sample_number=sample_number,
            n_runs=0,
            n_plates=0,
            rows_total=0,
            n_cols=12,
            distribution={},
            summary={},
            flags=[],
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(constraint="uq_samples_site_sample")
    )
    sample = session.scalar(
        select(Sample)
        .where(Sample.site_id == site_id, Sample.sample_number == sample_number)
        .with_for_update()
    )
    assert sample is not None
    return sample


def _check_device(message: RunMessage, device: Device) -> None:
    if device.status != "active":
        raise ResultError("device is revoked")
    if message.site_id != device.site.slug or message.device_id != device.slug:
        raise ResultError(
            f"run names {message.site_id}/{message.device_id} but comes from "
            f"{device.site.slug}/{device.slug}"
        )


def upsert_run(session: Session, message: RunMessage, *, device: Device) -> Applied:
    """Insert or update a run from its wire message; a not-newer edit is a no-op."""
    _check_device(message, device)
    existing = session.get(Run, message.run_id, with_for_update=True)
    if existing is not None:
        if existing.device_id != device.id:
            raise ResultError("run_id belongs to another device")
        if message.edit <= existing.edit:
            return Applied("duplicate", existing.run_id, existing.sample_id)
    fmt = plate_format(message.plate_format)
    sample = _sample_for(session, site_id=device.site_id, sample_number=message.sample_number)
    if message.submission_number:
        sample.submission_number = message.submission_number
    affected = {sample.id}
    extra = message.model_dump(
        mode="json",
        include={
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
        },
    )
    if message.review is not None:  # who reviewed it (a plain run's extra has no such key)
        extra["review"] = message.review.model_dump(mode="json")
    fields = {
        "edit": message.edit,
        "site_id": device.site_id,
        "device_id": device.id,
        "sample_id": sample.id,
        "plate_id": message.plate_id,
        "sample_number": message.sample_number,
        "submission_number": message.submission_number,
        "read_at": message.captured_at,
        "n_rows": fmt.rows,
        "n_cols": fmt.cols,
        "flags": list(message.flags),
        "review_reasons": list(message.review_reasons),
        "extra": extra,
        "image_keys": run_image_keys(
            site=device.site.slug,
            device=device.slug,
            run_id=str(message.run_id),
            roles=(img.role for img in message.images),
        ),
        "received_at": utcnow(),
        "reviewed_at": message.review.at if message.review is not None else None,
        "n_corrected": len(message.corrected_wells()),
    }
    if existing is None:
        status = "needs_review" if message.needs_review else "current"
        run = Run(run_id=message.run_id, status=status, **fields)
        session.add(run)
    else:
        run = existing
        affected.add(run.sample_id)
        for key, value in fields.items():
            setattr(run, key, value)
        if run.status == "superseded" and run.superseded_by is None:
            run.status = "current"
        if run.status != "deleted" and message.needs_review:
            run.status = "needs_review"
        elif run.status == "needs_review":
            run.status = "current"
        session.execute(delete(RunWell).where(RunWell.run_id == run.run_id))
        session.execute(delete(RunRow).where(RunRow.run_id == run.run_id))
    session.flush()
    _insert_details(session, message)
    if message.supersedes is not None:
        older = session.get(Run, message.supersedes, with_for_update=True)
        if older is not None and older.device_id == device.id:
            older.superseded_by = message.run_id
            older.status = "superseded"
            affected.add(older.sample_id)
    _apply_pending_events(session, run)
    _recompute_and_announce(session, run, affected, sample_number=run.sample_number)
    return Applied("applied", run.run_id, run.sample_id)


@functools.cache
def _layout(n_wells: int) -> tuple[tuple[str, int, int], ...]:
    """(well id, row, col) in plate order."""
    fmt = plate_format(n_wells)
    return tuple((w, *fmt.parse_well_id(w)) for w in fmt.well_ids())


def well_document(message: RunMessage) -> list[dict[str, Any]]:
    """The run's wells as stored in `run_wells.wells` and served by the API: plate order."""
    out: list[dict[str, Any]] = []
    wells = message.wells
    for well_id, row, col in _layout(message.plate_format):
        # The field values straight from the (frozen, validated) model's __dict__: 96 wells a
        # run on the ingest's bulk path; attribute access cost a sixth of this function.
        w = wells[well_id].__dict__
        box = w["box"]
        doc = {
            "well_id": well_id,
            "row": row,
            "col": col,
            "state": w["state"],
            "confidence": w["confidence"],
            "class_name": w["class_name"],
            "box": list(box) if box is not None else None,
            "flags": list(w["flags"]),
            "n_detections": w["n_detections"],
        }
        if w["model_state"] is not None:  # a reviewed run: the model's call beside the final one
            doc["model_state"] = w["model_state"]
        out.append(doc)
    return out


def _insert_details(session: Session, message: RunMessage) -> None:
    session.add(RunWell(run_id=message.run_id, wells=well_document(message)))
    session.add_all(
        RunRow(
            run_id=message.run_id,
            row=r.row,
            label=r.label,
            endpoint=r.endpoint,
            titre=r.titre,
            flags=list(r.flags),
            counted=r.counted,
            counted_titre=r.counted_titre,
            exclusion_reason=r.exclusion_reason,
        )
        for r in message.rows
    )
    session.flush()


def _samples_sharing_plate(
    session: Session, *, plate_id: uuid.UUID, device_id: uuid.UUID
) -> set[uuid.UUID]:
    """`core.pooling.affected_samples`: the samples holding a read of the plate. A plate is
    (site, device, plate_id) (docs/sync.md, "Plate identity"); a device has one site."""
    query = select(Run.sample_id).where(Run.plate_id == plate_id, Run.device_id == device_id)
    return set(session.scalars(query))


def apply_event(
    session: Session,
    event: RunEvent,
    *,
    device: Device,
    max_pending: int = pending.MAX_PENDING_PER_DEVICE,
) -> Applied:
    """Apply a deleted/superseded event; idempotent on (run_id, edit). An event for a run not
    received yet waits for it (`cloud.crud.pending`: at most `max_pending` per device)."""
    if device.status != "active":
        raise ResultError("device is revoked")
    seen = session.scalar(
        select(DeviceEvent).where(
            DeviceEvent.run_id == event.run_id, DeviceEvent.edit == event.edit
        )
    )
    run = session.get(Run, event.run_id, with_for_update=True)
    if run is not None and run.device_id != device.id:
        raise ResultError("run_id belongs to another device")
    if seen is not None or (run is not None and event.edit <= run.edit):
        return Applied("duplicate", event.run_id, run.sample_id if run else None)
    if run is None and pending.pending_for_device(session, device_id=device.id) >= max_pending:
        raise ResultError(
            f"more than {max_pending} events already wait for runs this cloud has not received"
        )
    detail = event.model_dump(mode="json", include={"at", "reason", "superseded_by"})
    session.add(
        DeviceEvent(
            run_id=event.run_id,
            edit=event.edit,
            kind=event.kind,
            detail={**detail, "device": str(device.id)},
        )
    )
    session.flush()
    if run is None:
        # The event overtook its run (QoS 1 gives no order); applied when the run lands.
        return Applied("applied", event.run_id, None)
    _apply(run, event.kind, event.edit, event.superseded_by)
    _recompute_and_announce(session, run, {run.sample_id}, event=event.kind)
    return Applied("applied", run.run_id, run.sample_id)


def _apply(run: Run, kind: str, edit: int, superseded_by: uuid.UUID | None) -> None:
    run.edit = max(run.edit, edit)
    if kind == "deleted":
        run.status = "deleted"
    else:
        run.status = "superseded"
        run.superseded_by = superseded_by


def _apply_pending_events(session: Session, run: Run) -> None:
    pending = session.scalars(
        select(DeviceEvent)
        .where(DeviceEvent.run_id == run.run_id, DeviceEvent.edit > run.edit)
        .order_by(DeviceEvent.edit)
    )
    for ev in pending:
        by = ev.detail.get("superseded_by")
        _apply(run, ev.kind, ev.edit, uuid.UUID(by) if by else None)
    session.flush()


def delete_run(session: Session, *, run: Run) -> None:
    """A manager's deletion: the run stops counting; its sample is recomputed now."""
    run.status = "deleted"
    session.flush()
    _recompute_and_announce(session, run, {run.sample_id}, event="deleted")


def _recompute_and_announce(
    session: Session, run: Run, affected: set[uuid.UUID], **extra: str
) -> None:
    """Recompute every sample the change touches (re-reads of the same plate under another
    sample number included) and tell the dashboards, in the caller's transaction."""
    affected = affected | _samples_sharing_plate(
        session, plate_id=run.plate_id, device_id=run.device_id
    )
    for sample_id in sorted(affected):
        recompute_sample(session, sample_id=sample_id)
    notify(
        session,
        {
            "type": "run",
            "site_id": str(run.site_id),
            "device_id": str(run.device_id),
            "run_id": str(run.run_id),
            "sample_id": str(run.sample_id),
            **extra,
        },
    )


def _reads(session: Session, runs: list[Run]) -> list[PlateRead]:
    if not runs:
        return []
    rows_by_run: dict[uuid.UUID, list[RowResult]] = {r.run_id: [] for r in runs}
    query = (
        select(RunRow)
        .where(RunRow.run_id.in_(list(rows_by_run)))
        .order_by(RunRow.run_id, RunRow.row)
    )
    for row in session.scalars(query):
        rows_by_run[row.run_id].append(
            RowResult(
                row=row.row,
                label=row.label,
                endpoint=row.endpoint,
                titre=row.titre,
                flags=tuple(row.flags),
                counted=row.counted,
                counted_titre=row.counted_titre,
                exclusion_reason=row.exclusion_reason,
            )
        )
    return [
        PlateRead(
            run_id=run.run_id,
            sample_number=run.sample_number,
            plate_id=run.plate_id,
            read_at=run.read_at,
            rows=tuple(rows_by_run[run.run_id]),
            superseded_by=run.superseded_by,
            # A run held for review is shown but never pooled (like a deleted one).
            deleted=run.status in HELD,
            device=str(run.device_id),
        )
        for run in runs
    ]


def recompute_sample(session: Session, *, sample_id: uuid.UUID) -> SampleSummary | None:
    """Pool a sample over its current reads and store the result (same transaction)."""
    sample = session.get(Sample, sample_id, with_for_update=True)
    if sample is None:
        return None
    own = list(session.scalars(select(Run).where(Run.sample_id == sample_id)))
    plates = {(r.device_id, r.plate_id) for r in own}
    # Re-reads of the same plates (same device) under another sample number decide which read
    # is current; `core.pooling` decides, this only loads them.
    related = (
        list(
            session.scalars(
                select(Run).where(
                    Run.plate_id.in_({p for _, p in plates}),
                    Run.sample_id != sample_id,
                )
            )
        )
        if plates
        else []
    )
    related = [r for r in related if (r.device_id, r.plate_id) in plates]
    site = session.get(Site, sample.site_id)
    n_cols = max((r.n_cols for r in own), default=12)
    summary = pool_sample(
        sample.sample_number,
        _reads(session, own + related),
        n_cols=n_cols,
        protective_titre=site.protective_titre if site else None,
    )
    counted = set(summary.run_ids)
    current = counted | set(summary.held_run_ids)
    flags: set[str] = set()
    for run in own:
        if run.status not in HELD:
            run.status = "current" if run.run_id in current else "superseded"
        if run.run_id in current:  # a held run's flags (e.g. why it is held) show too
            flags.update(run.flags)
    for row in session.scalars(select(RunRow).where(RunRow.run_id.in_(counted))) if counted else ():
        flags.update(row.flags)
    sample.n_runs = len(own)
    sample.n_plates = summary.plates
    sample.rows_total = summary.rows_total
    sample.n_cols = n_cols
    sample.distribution = dict(summary.distribution)
    sample.summary = summary.model_dump(mode="json")
    sample.gmt = summary.statistics.gmt
    sample.flags = sorted(flags)
    read_times = [r.read_at for r in own if r.status != "deleted"]
    sample.first_read_at = min(read_times, default=None)
    sample.last_read_at = max(read_times, default=None)
    sample.updated_at = utcnow()
    session.flush()
    return summary


def record_device_status(session: Session, status: DeviceStatus, *, device: Device) -> bool:
    """Store a device's status message and push it to dashboards; False if it names another
    device or is older than the one already stored (status messages may arrive out of order).
    """
    if status.site_id != device.site.slug or status.device_id != device.slug:
        raise ResultError("status names another device")
    previous = device.last_status or {}
    if previous.get("at") and datetime.fromisoformat(previous["at"]) >= status.at:
        return False
    device.last_status = status.model_dump(mode="json")
    device.last_seen_at = status.at
    session.flush()
    notify(
        session,
        {
            "type": "device",
            "site_id": str(device.site_id),
            "device_id": str(device.id),
            "online": status.online,
            "backlog": status.backlog,
        },
    )
    return True

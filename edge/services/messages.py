"""`core.wire` messages the appliance queues in its outbox (JSON text, validated on build)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING
from uuid import UUID

from core.wire import ImageRef, RunEvent, build_run_message, encode_message

if TYPE_CHECKING:
    from edge.config import EdgeSettings
    from edge.db.runs import RunRecord
    from edge.detect.plate import PlateResult

_UNKNOWN_SHA = "0" * 64


def image_key(settings: EdgeSettings, run_id: str, name: str) -> str:
    """Object key a run's image gets in the cloud's storage: `site/device/run/name`."""
    return f"{settings.site_id}/{settings.device_id}/{run_id}/{name}"


def run_message(settings: EdgeSettings, rec: RunRecord, result: PlateResult) -> str:
    model = {
        "name": rec.model.get("name") or rec.model.get("backend") or "unknown",
        "version": rec.model.get("version") or "0",
        "sha256": rec.model.get("sha256") or _UNKNOWN_SHA,
    }
    message = build_run_message(
        calls=result.wells,
        rows=result.rows,
        run_id=UUID(rec.run_id),
        plate_id=UUID(rec.plate_id),
        edit=0,
        device_id=settings.device_id,
        site_id=settings.site_id,
        sample_number=rec.sample_number,
        submission_number=rec.submission_number or None,
        description=rec.description,
        operator=rec.operator,
        captured_at=rec.captured_at,
        processed_at=rec.processed_at,
        model=model,
        calibration_id=result.grid.grid_id,
        plate_format=result.fmt.n_wells,
        dilution=result.dilution,
        min_confidence=result.min_confidence,
        supersedes=UUID(rec.supersedes) if rec.supersedes and not rec.needs_review else None,
        needs_review=rec.needs_review,
        review_reasons=tuple(rec.review_reasons),
        reading=rec.reading,
        images=tuple(
            ImageRef(
                role=role,
                key=image_key(settings, rec.run_id, name),
                sha256=sha,
                size_bytes=size,
            )
            for role, (name, sha, size) in rec.image_files.items()
        ),
    )
    return encode_message(message).decode("utf-8")


def run_event(
    run_id: str,
    kind: str,
    *,
    edit: int,
    reason: str = "",
    superseded_by: str | None = None,
    at: datetime | None = None,
) -> str:
    event = RunEvent(
        kind=kind,
        run_id=UUID(run_id),
        edit=edit,
        at=at or datetime.now(timezone.utc),
        reason=reason[:2000],
        superseded_by=UUID(superseded_by) if superseded_by else None,
    )
    return encode_message(event).decode("utf-8")

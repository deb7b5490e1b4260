"""Build real wire messages (through core) for tests and the benchmark."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone

from core.plate import PLATE_96
from core.titre import DilutionSettings, hold_for_review, row_results
from core.wells import WellCall
from core.wire import ModelInfo, RunEvent, RunMessage, build_run_message

MODEL = ModelInfo(name="hi-yolo", version="1.0", sha256="0" * 64)


def plate_calls(endpoints: Sequence[int | None]) -> dict[str, WellCall]:
    """Wells for 8 rows: columns 1..endpoint flow, the rest agglutinate; None = unread row."""
    calls: dict[str, WellCall] = {}
    for row, label in enumerate(PLATE_96.row_labels):
        end = endpoints[row]
        for col in range(PLATE_96.cols):
            state = "unread" if end is None else "flowing" if col < end else "agglutinated"
            calls[f"{label}{col + 1}"] = WellCall(
                well_id=f"{label}{col + 1}",
                row=row,
                col=col,
                state=state,
                confidence=None if state == "unread" else 0.9,
                box=None
                if state == "unread"
                else (10.0 * col, 10.0 * row, 10.0 * col + 8, 10.0 * row + 8),
                class_name=None if state == "unread" else state,
                n_detections=0 if state == "unread" else 1,
            )
    return calls


def run_message(
    *,
    site: str,
    device: str,
    sample_number: str,
    endpoints: Sequence[int | None] = (5, 6, 5, 7, 4, 6, 5, 6),
    run_id: uuid.UUID | None = None,
    plate_id: uuid.UUID | None = None,
    edit: int = 0,
    captured_at: datetime | None = None,
    submission_number: str | None = None,
    supersedes: uuid.UUID | None = None,
    review_reasons: Sequence[str] = (),
) -> RunMessage:
    """A run as an appliance sends it; `review_reasons`: held by its plate-quality gate."""
    calls = plate_calls(endpoints)
    dilution = DilutionSettings()
    when = captured_at or datetime.now(timezone.utc)
    run_id = run_id or uuid.uuid4()
    rows = row_results(calls, PLATE_96, dilution=dilution)
    return build_run_message(
        calls=calls,
        rows=hold_for_review(rows) if review_reasons else rows,
        needs_review=bool(review_reasons),
        review_reasons=tuple(review_reasons),
        run_id=run_id,
        plate_id=plate_id or uuid.uuid4(),
        edit=edit,
        device_id=device,
        site_id=site,
        sample_number=sample_number,
        submission_number=submission_number,
        captured_at=when,
        processed_at=when,
        model=MODEL,
        calibration_id="cal-1",
        plate_format=96,
        dilution=dilution,
        images=(),
        supersedes=supersedes,
    )


def deleted_event(run_id: uuid.UUID, edit: int) -> RunEvent:
    return RunEvent(kind="deleted", run_id=run_id, edit=edit, at=datetime.now(timezone.utc))

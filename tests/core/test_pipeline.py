"""The whole core path on the reference calibration: boxes -> wells -> rows -> sample -> CSV."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.labware import render_csv_bytes
from core.plate import PLATE_96
from core.pooling import PlateRead, pool_sample
from core.titre import row_results
from core.wells import ClassMap, call_wells
from core.wire import build_run_message, encode_message, parse_message
from tests.core.test_labware import LEGACY_EXPECTED

REFERENCE = Path(__file__).parent / "data" / "roi_calibration.json"
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
CLASSES = ["Flowing", "Agglutinated", "Invalid"]


def plate_boxes(grid: CalibrationGrid, endpoints: list[int | None]) -> list[Detection]:
    """Boxes as a detector would give them: one per well, some crossing a grid line."""
    boxes = []
    for row, end in enumerate(endpoints):
        for col in range(12):
            flowing = end is not None and col < end
            x1, y1, x2, y2 = grid.cell_box(row, col)
            w, h = x2 - x1, y2 - y1
            # 110 % of the cell, shifted right by 8 %: crosses the line, centre stays inside
            cx, cy = (x1 + x2) / 2 + 0.08 * w, (y1 + y2) / 2
            boxes.append(
                Detection(
                    x1=cx - 0.55 * w,
                    y1=cy - 0.55 * h,
                    x2=cx + 0.55 * w,
                    y2=cy + 0.55 * h,
                    confidence=0.91 if flowing else 0.87,
                    class_id=0 if flowing else 1,
                    class_name=CLASSES[0 if flowing else 1],
                )
            )
    return boxes


def test_reference_plates_give_the_worked_example() -> None:
    # The camera delivers 1280 × 904 frames; the reference grid was made on 1700 × 1200.
    grid = CalibrationGrid.from_json(REFERENCE.read_text(encoding="utf-8")).scaled(1280, 904)
    cmap = ClassMap.for_model(CLASSES)
    reads, messages = [], []
    for i, endpoints in enumerate([[5, 6, 5, 7, 4, 6, 5, None], [6, 6, 5, 5, 7, 8, 6, 6]]):
        calls = call_wells(plate_boxes(grid, endpoints), grid, class_map=cmap, min_confidence=0.5)
        assert all(c.state != "unread" and c.flags == () for c in calls.values())
        rows = row_results(calls, PLATE_96)
        assert [r.endpoint for r in rows] == [e or 0 for e in endpoints]
        run_id, plate_id = uuid.uuid4(), uuid.uuid4()
        reads.append(
            PlateRead(
                run_id=run_id,
                sample_number="S-001",
                plate_id=plate_id,
                read_at=T0 + timedelta(minutes=i),
                rows=tuple(rows),
            )
        )
        msg = build_run_message(
            calls=calls,
            rows=rows,
            run_id=run_id,
            plate_id=plate_id,
            device_id="edge-01",
            site_id="lab",
            sample_number="S-001",
            captured_at=T0,
            processed_at=T0,
            model={"name": "hi-yolo", "version": "1", "sha256": "0" * 64},
            calibration_id=grid.grid_id,
            plate_format=96,
            dilution={"start_dilution": 10},
        )
        messages.append(parse_message(encode_message(msg)))
    summary = pool_sample("S-001", reads, n_cols=12)
    assert render_csv_bytes(summary, template="labware-legacy") == LEGACY_EXPECTED
    # the cloud, pooling from what arrived on the wire, gets the same summary
    wire_reads = [
        PlateRead(
            run_id=m.run_id,
            sample_number=m.sample_number,
            plate_id=m.plate_id,
            read_at=r.read_at,
            rows=m.rows,
        )
        for m, r in zip(messages, reads, strict=True)
    ]
    assert pool_sample("S-001", wire_reads, n_cols=12) == summary

"""PlateReader over the fake backend: calls, thresholds, grids, class maps, bad files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from core.titre import DilutionSettings
from edge.detect.base import create_detector
from edge.detect.errors import DetectorError, ImageDecodeError
from edge.detect.reader import PlateReader, _full_size
from edge.detect.settings import FakeBox, FakeDetectorSettings, ReviewSettings

LEGACY = Path(__file__).resolve().parents[2] / "core" / "data" / "roi_calibration.json"


def box_in(grid: CalibrationGrid, well: str, cls: str, conf: float = 0.9, dx: float = 0) -> FakeBox:
    r, c = PLATE_96.parse_well_id(well)
    x1, y1, x2, y2 = grid.cell_box(r, c)
    cx, cy, w, h = (x1 + x2) / 2 + dx, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return FakeBox(
        x1=cx - w / 2, y1=cy - h / 2, x2=cx + w / 2, y2=cy + h / 2, class_name=cls, confidence=conf
    )


# These tests are about single wells on blank frames: the plate-quality gate (test_gate.py)
# is opened so that it holds no row back.
OPEN_GATE = ReviewSettings(
    max_unread_fraction=1.0,
    max_nowell=384,
    not_a_plate_fraction=1.0,
    max_off_centre_fraction=1.0,
    blank_frame_std=0.0,
)


def reader_for(boxes: list[FakeBox], classes=None, class_map=None, **kw) -> PlateReader:
    kw.setdefault("review", OPEN_GATE)
    settings = FakeDetectorSettings(
        frames=[boxes],
        classes=classes or ["flowing", "agglutinated", "invalid"],
        class_map=class_map or {},
        min_confidence=0.1,
    )
    return PlateReader(create_detector(settings), **kw)


def test_calibration_is_scaled_to_the_frame():
    grid = CalibrationGrid.from_json(LEGACY.read_text())
    half = grid.scaled(850, 600)
    boxes = [
        box_in(half, "A1", "flowing"),
        box_in(half, "A2", "flowing"),
        box_in(half, "H12", "invalid"),
    ]
    reader = reader_for(boxes, grid=grid)
    reading = reader.read(np.zeros((600, 850, 3), dtype=np.uint8))
    assert reading.grid == half and reading.grid_source == "calibration"
    assert reading.wells["A2"].state == "flowing" and reading.wells["A3"].state == "unread"
    assert reading.wells["H12"].state == "invalid"
    assert reading.rows[0].endpoint == 2 and reading.rows[0].titre == 20
    # A3, the well that confirms the endpoint, is unread: the row is flagged and not counted.
    assert "unread" in reading.rows[0].flags and reading.distribution["2"] == 0
    assert set(reading.timings_ms) >= {"decode", "preprocess", "infer", "postprocess", "total"}


def test_low_confidence_and_multiple_are_flagged_not_guessed():
    grid = CalibrationGrid.uniform(400, 300, PLATE_96)
    boxes = [
        box_in(grid, "A1", "flowing", conf=0.3),
        box_in(grid, "B1", "flowing", conf=0.9),
        box_in(grid, "B1", "agglutinated", conf=0.6, dx=3),
    ]
    reading = reader_for(boxes, min_confidence=0.5).read(np.zeros((300, 400, 3), np.uint8))
    assert reading.grid_source == "uniform"
    a1, b1 = reading.wells["A1"], reading.wells["B1"]
    assert a1.state == "unread" and "low_confidence" in a1.flags
    assert b1.state == "flowing" and "multiple" in b1.flags
    data = reading.to_dict()
    assert data["wells"]["A1"]["flags"] == ["low_confidence"]
    assert data["wells"]["B1"] == {"call": "flowing", "confidence": 0.9, "flags": ["multiple"]}


def test_dilution_settings_apply():
    grid = CalibrationGrid.uniform(400, 300, PLATE_96)
    boxes = [box_in(grid, f"C{c}", "flowing") for c in range(1, 4)]
    boxes += [box_in(grid, f"C{c}", "agglutinated") for c in range(4, 13)]
    reader = reader_for(boxes, dilution=DilutionSettings(start_dilution=8, factor=2))
    row_c = reader.read(np.zeros((300, 400, 3), np.uint8)).rows[2]
    assert (row_c.endpoint, row_c.titre, row_c.flags) == (3, 32, ())


def test_unknown_model_classes_need_a_class_map():
    with pytest.raises(DetectorError, match="class_map"):
        reader_for([], classes=["Tear", "Mat", "Junk"])
    reader = reader_for(
        [],
        classes=["Tear", "Mat", "Junk"],
        class_map={"Tear": "flowing", "Mat": "agglutinated", "Junk": "invalid"},
    )
    assert reader.class_map.state_for("tear") == "flowing"


def test_read_bytes_and_file(tmp_path: Path):
    reader = reader_for([])
    with pytest.raises(ImageDecodeError, match="empty"):
        reader.read_bytes(b"")
    _, buf = cv2.imencode(".png", np.zeros((120, 160, 3), np.uint8))
    reading = reader.read_bytes(buf.tobytes())
    assert (reading.image_width, reading.image_height) == (160, 120)
    assert all(call.state == "unread" for call in reading.wells.values())
    assert reading.statistics.n == 0 and reading.statistics.excluded == {"unread": 8}
    path = tmp_path / "p.png"
    path.write_bytes(buf.tobytes())
    assert reader.read_file(path).timings_ms["decode"] > 0


def test_fast_decode_reports_full_size_pixels():
    boxes = [FakeBox(x1=10, y1=20, x2=50, y2=60, class_name="flowing")]
    _, buf = cv2.imencode(".jpg", np.zeros((1200, 1700, 3), np.uint8))
    fast = reader_for(boxes).read_bytes(buf.tobytes())  # the fake's input is 512: 1/2 decode
    assert (fast.image_width, fast.image_height) == (1700, 1200)
    [det] = fast.detections
    assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx((20, 40, 100, 120), abs=1e-3)
    assert fast.grid.image_width == 1700
    slow = reader_for(boxes, fast_decode=False).read_bytes(buf.tobytes())
    [det] = slow.detections
    assert (det.x1, det.y1, det.x2, det.y2) == pytest.approx((10, 20, 50, 60), abs=1e-3)


def test_full_size_allows_for_exif_rotation():
    _, buf = cv2.imencode(".jpg", np.zeros((1201, 1701, 3), np.uint8))
    data = buf.tobytes()
    assert _full_size(data, np.zeros((601, 851, 3), np.uint8), 2) == (1701, 1201)
    assert _full_size(data, np.zeros((851, 601, 3), np.uint8), 2) == (1201, 1701)
    assert _full_size(data, np.zeros((10, 10, 3), np.uint8), 2) == (20, 20)
    assert _full_size(data, np.zeros((601, 851, 3), np.uint8), 1) is None

"""The plate-quality gate: the decision itself, and whole reads that must be held for review.

The reads use generated plates (`tests.edge.plates`) and the contract-following test
classifier (`wells_models`), never real photos.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96
from core.wells import WellCall
from edge.detect.base import create_detector
from edge.detect.classifier import create_classifier
from edge.detect.gate import frame_is_blank, off_centre, review_reasons
from edge.detect.reader import PlateReader
from edge.detect.settings import FakeDetectorSettings, OnnxDetectorSettings, ReviewSettings
from tests.edge import plates
from tests.edge.detect.wells_models import wells_dir

ENDPOINTS = [3, 5, 7, 2, 9, 4, 6, 8]
PAD = 100  # background beyond the plate, so that a shifted grid stays inside the frame


def padded_plate() -> tuple[np.ndarray, CalibrationGrid]:
    """A generated plate with room around it, and the grid its wells were drawn on."""
    plate = plates.plate_image(ENDPOINTS)
    image = cv2.copyMakeBorder(plate, 0, PAD, 0, PAD, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    inner = CalibrationGrid.uniform(plates.WIDTH, plates.HEIGHT, PLATE_96, plates.MARGIN)
    grid = CalibrationGrid(
        columns=inner.columns,
        rows=inner.rows,
        image_width=image.shape[1],
        image_height=image.shape[0],
    )
    return image, grid


def shifted(grid: CalibrationGrid, fraction: float, *, rows: bool = True) -> CalibrationGrid:
    dx = (grid.columns[1] - grid.columns[0]) * fraction
    dy = (grid.rows[1] - grid.rows[0]) * fraction if rows else 0.0
    return CalibrationGrid(
        columns=tuple(x + dx for x in grid.columns),
        rows=tuple(y + dy for y in grid.rows),
        image_width=grid.image_width,
        image_height=grid.image_height,
    )


def slide(width: int, height: int) -> np.ndarray:
    """Something like a lecture slide: title bar, bullet text, a chart, a logo."""
    img = np.full((height, width, 3), 250, dtype=np.uint8)
    cv2.rectangle(img, (0, 0), (width, 110), (120, 60, 20), -1)
    cv2.putText(img, "Haemagglutination inhibition", (30, 75), 0, 2.0, (255, 255, 255), 4)
    for i in range(9):
        y = 170 + i * 70
        cv2.circle(img, (50, y - 10), 8, (40, 40, 40), -1)
        cv2.putText(img, f"Point {i}: serum titres and antigen", (80, y), 0, 1.2, (30, 30, 30), 2)
    cv2.rectangle(img, (820, 520), (1250, 860), (200, 200, 200), -1)
    for k in range(6):
        cv2.rectangle(img, (850 + k * 65, 840 - 40 * k), (895 + k * 65, 840), (40, 90, 200), -1)
    return img


@pytest.fixture(scope="module")
def reader_parts(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = wells_dir(tmp_path_factory.mktemp("wells") / "hi-wells")
    # The gate judges the per-well calls; the disc classifier is too timid (a button scores
    # about 0.75) for the row decode's shipped threshold, so the rows here are read per well.
    classifier = create_classifier(
        OnnxDetectorSettings(wells_model_dir=folder, device="cpu", row_decode={"enabled": False})
    )
    detector = create_detector(FakeDetectorSettings())
    yield detector, classifier
    classifier.close()  # type: ignore[union-attr]


def read(parts, image: np.ndarray, grid: CalibrationGrid):  # type: ignore[no-untyped-def]
    detector, classifier = parts
    return PlateReader(detector, grid=grid, wells=classifier).read(image)


def test_the_plate_on_its_own_grid_is_clean(reader_parts) -> None:  # type: ignore[no-untyped-def]
    image, grid = padded_plate()
    reading = read(reader_parts, image, grid)
    assert reading.reader == "classifier" and reading.reading == "tilted"
    assert not reading.needs_review and reading.review_reasons == ()
    assert [r.endpoint for r in reading.rows] == ENDPOINTS
    assert all(r.counted for r in reading.rows)
    as_json = reading.to_dict()
    assert as_json["needs_review"] is False and as_json["review_reasons"] == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("grey", "not_a_plate"),
        ("noise", "not_a_plate"),
        ("slide", "not_a_plate"),
        ("half_well_shift", "grid_misfit"),
    ],
)
def test_frames_that_must_be_reviewed(reader_parts, frame: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    image, grid = padded_plate()
    h, w = image.shape[:2]
    if frame == "grey":
        image = np.full_like(image, 128)
    elif frame == "noise":
        image = np.random.default_rng(3).integers(0, 256, image.shape, dtype=np.uint8)
    elif frame == "slide":
        image = slide(w, h)
    else:
        grid = shifted(grid, 0.5)
    reading = read(reader_parts, image, grid)
    assert reading.needs_review and reason in reading.review_reasons
    assert not any(r.counted for r in reading.rows)
    assert all("review" in r.flags and r.exclusion_reason == "review" for r in reading.rows)
    assert reading.statistics.n == 0 and sum(reading.distribution.values()) == 0
    as_json = reading.to_dict()
    assert as_json["needs_review"] is True and reason in as_json["review_reasons"]
    assert not any(row["counted"] for row in as_json["rows"].values())


def test_a_quarter_well_shift_is_still_read(reader_parts) -> None:  # type: ignore[no-untyped-def]
    image, grid = padded_plate()
    reading = read(reader_parts, image, shifted(grid, 0.1))
    assert not reading.needs_review
    assert [r.endpoint for r in reading.rows] == ENDPOINTS


# --- the decision ------------------------------------------------------------------------------
def calls(states: list[str]) -> dict[str, WellCall]:
    out = {}
    for i, state in enumerate(states):
        row, col = divmod(i, 12)
        wid = PLATE_96.well_id(row, col)
        out[wid] = WellCall(well_id=wid, row=row, col=col, state=state)  # type: ignore[arg-type]
    return out


def test_unread_threshold_is_a_setting() -> None:
    states = ["flowing"] * 70 + ["unread"] * 26
    assert review_reasons(calls(states), settings=ReviewSettings()) == ["too_many_unread"]
    loose = ReviewSettings(max_unread_fraction=0.3)
    assert review_reasons(calls(states), settings=loose) == []


def test_nowell_counts_and_blank_frames() -> None:
    clean = calls(["flowing"] * 96)
    settings = ReviewSettings(max_nowell=4, max_unread_fraction=1.0)
    assert review_reasons(clean, settings=settings, nowell=4) == []
    assert review_reasons(clean, settings=settings, nowell=5) == ["grid_misfit"]
    assert review_reasons(clean, settings=settings, nowell=48) == ["not_a_plate"]
    assert review_reasons(clean, settings=settings, blank=True) == ["not_a_plate"]
    assert frame_is_blank(np.full((50, 60, 3), 90, np.uint8), 4.0)
    assert not frame_is_blank(plates.plate_image(ENDPOINTS), 4.0)


def test_precision_disagreement() -> None:
    clean = calls(["flowing"] * 96)
    settings = ReviewSettings(min_precision_agreement=0.98)
    assert review_reasons(clean, settings=settings, agreement=0.99) == []
    assert review_reasons(clean, settings=settings, agreement=0.9) == ["precision_disagreement"]


def test_detector_path_off_centre_boxes() -> None:
    grid = CalibrationGrid.uniform(1200, 800, PLATE_96)
    pitch_x = grid.columns[1] - grid.columns[0]

    def boxes(offset: float) -> list[Detection]:
        out = []
        for r in range(8):
            for c in range(12):
                x1, y1, x2, y2 = grid.cell_box(r, c)
                cx, cy = (x1 + x2) / 2 + offset * pitch_x, (y1 + y2) / 2
                out.append(
                    Detection(
                        x1=cx - 20,
                        y1=cy - 20,
                        x2=cx + 20,
                        y2=cy + 20,
                        class_id=0,
                        class_name="flowing",
                        confidence=0.9,
                    )
                )
        return out

    assert off_centre(boxes(0.1), grid) == (0, 0)
    far, empty = off_centre(boxes(0.35), grid)
    assert far > 0 and empty == 0
    settings = ReviewSettings()
    clean = calls(["flowing"] * 96)
    assert review_reasons(clean, settings=settings, detections=boxes(0.1), grid=grid) == []
    held = review_reasons(clean, settings=settings, detections=boxes(0.35), grid=grid)
    assert held == ["grid_misfit"]
    assert review_reasons(clean, settings=settings, detections=[], grid=grid) == ["grid_misfit"]


def test_reader_holds_a_detector_read_through_a_misfitting_grid(tmp_path: Path) -> None:
    grid = CalibrationGrid.uniform(1200, 800, PLATE_96, plates.MARGIN)
    frame = [dict(b) for b in plates.frame_boxes(ENDPOINTS)]
    good = PlateReader(create_detector(FakeDetectorSettings(frames=[frame])), grid=grid).read(
        plates.plate_image(ENDPOINTS)
    )
    assert not good.needs_review and good.reader == "detector"
    bad = PlateReader(
        create_detector(FakeDetectorSettings(frames=[frame])), grid=shifted(grid, -0.35, rows=False)
    ).read(plates.plate_image(ENDPOINTS))
    assert bad.needs_review and "grid_misfit" in bad.review_reasons
    assert not any(r.counted for r in bad.rows)


def test_detector_cross_check_of_the_classifier(reader_parts) -> None:  # type: ignore[no-untyped-def]
    _, classifier = reader_parts
    image, grid = padded_plate()
    review = ReviewSettings(cross_check_detector=True)

    def reader_with(boxes: list[dict[str, object]]) -> PlateReader:
        detector = create_detector(FakeDetectorSettings(frames=[boxes], min_confidence=0.05))
        return PlateReader(detector, grid=grid, wells=classifier, review=review)

    agreeing = plates.frame_boxes(ENDPOINTS)
    reading = reader_with(agreeing).read(image)
    assert not reading.needs_review and len(reading.detections) == 96
    assert "cross-check" in reading.timings_ms
    opposite = plates.frame_boxes([12 - e for e in ENDPOINTS])
    reading = reader_with(opposite).read(image)
    assert reading.review_reasons == ("detector_disagreement",)
    assert not any(r.counted for r in reading.rows)
    pitch = grid.columns[1] - grid.columns[0]
    moved = [{**b, "x1": b["x1"] + 0.4 * pitch, "x2": b["x2"] + 0.4 * pitch} for b in agreeing]
    reading = reader_with(moved).read(image)
    assert "grid_misfit" in reading.review_reasons

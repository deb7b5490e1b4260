from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.calibration import CalibrationGrid
from core.detection import Detection
from edge.app import Appliance
from edge.errors import InvalidInput
from edge.schemas import RunRequest
from edge.services.calibration import propose
from tests.edge.plates import HEIGHT, PLATE_A, WIDTH, frame_boxes, jpeg, plate_image

REFERENCE = {
    "bounds": {"left": 106.0, "right": 1657.0, "top": 122.0, "bottom": 1134.0},
    "columns": [
        106.0,
        264.0,
        386.0,
        515.0,
        641.0,
        763.0,
        901.0,
        1014.0,
        1145.0,
        1271.0,
        1387.0,
        1520.0,
        1657.0,
    ],
    "rows": [122.0, 255.0, 386.0, 508.0, 626.0, 759.0, 900.0, 1011.0, 1134.0],
    "image_width": 1700,
    "image_height": 1200,
    "updated_at": "2025-11-14T10:36:31.822431Z",
    "format_version": 3,
}


def test_set_get_delete_calibration_persists_in_old_format(app: Appliance) -> None:
    assert app.calibration.get() is None
    grid = CalibrationGrid.from_legacy(REFERENCE)
    out = app.calibration.set(grid, actor="sup")
    assert out.grid_id == grid.grid_id and out.updated_by == "sup"
    saved = json.loads(app.settings.resolved_calibration_path.read_text())
    assert saved["format_version"] == 3 and saved["columns"] == REFERENCE["columns"]
    # A 1200x800 plate is read with the grid scaled from 1700x1200.
    t = app.intake.submit_image(jpeg(plate_image(PLATE_A)), "a.jpg", RunRequest(sample_number="C"))
    run = app.runs.get_run(app.intake.wait(t.id, 30).run_id or "")
    assert run.calibration_id == grid.scaled(WIDTH, HEIGHT).grid_id
    app.calibration.delete(actor="sup")
    assert app.calibration.get() is None
    assert not app.settings.resolved_calibration_path.exists()
    actions = [r[0] for r in app.store.read().execute("SELECT action FROM audit").fetchall()]
    assert actions == ["calibration.set", "calibration.delete"]


def test_propose_places_every_box_in_its_own_cell() -> None:
    dets = [Detection(**b, class_id=0) for b in frame_boxes(PLATE_A)]
    grid = propose(dets, WIDTH, HEIGHT)
    cells = {grid.cell_at(*d.center) for d in dets}
    assert len(cells) == 96 and None not in cells


def test_propose_refuses_too_few_wells() -> None:
    dets = [Detection(**b, class_id=0) for b in frame_boxes(PLATE_A)[:20]]
    with pytest.raises(InvalidInput, match="not enough"):
        propose(dets, WIDTH, HEIGHT)


def test_appliance_proposes_from_a_captured_frame(app: Appliance, tmp_path: Path) -> None:
    grid = app.calibration.propose()  # fake camera frame + the fake detector's plate
    assert grid.plate_format.n_wells == 96

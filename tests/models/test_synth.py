"""The synthetic plate generator: deterministic, exact labels, old-format calibration."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.calibration import CalibrationGrid
from models.synth import CLASSES, GENERATOR_VERSION, render_plate, true_endpoint
from models.synth.__main__ import main as synth_main
from models.synth.dataset import yolo_lines
from models.synth.patterns import plate_pattern

SMALL = (1280, 720)


@pytest.fixture(scope="module")
def plate():
    return render_plate(11, 3, resolution=SMALL)


def test_same_seed_and_index_give_the_same_bytes(plate) -> None:
    again = render_plate(11, 3, resolution=SMALL)
    assert again.jpeg == plate.jpeg
    assert again.wells == plate.wells
    assert again.calibration == plate.calibration


def test_other_index_or_seed_gives_another_plate(plate) -> None:
    assert render_plate(11, 4, resolution=SMALL).jpeg != plate.jpeg
    assert render_plate(12, 3, resolution=SMALL).jpeg != plate.jpeg


def test_image_matches_the_requested_resolution(plate) -> None:
    assert plate.image.shape == (720, 1280, 3)
    decoded = cv2.imdecode(np.frombuffer(plate.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == plate.image.shape


def test_one_labelled_box_per_well_inside_the_image(plate) -> None:
    assert len(plate.wells) == 96
    assert {(w["row"], w["col"]) for w in plate.wells} == {
        (r, c) for r in range(8) for c in range(12)
    }
    for well in plate.wells:
        x1, y1, x2, y2 = well["box"]
        assert 0 <= x1 < x2 <= plate.width
        assert 0 <= y1 < y2 <= plate.height
        assert well["state"] in CLASSES
        assert CLASSES[well["class_id"]] == well["state"]


@pytest.mark.parametrize("index", range(6))
def test_box_centres_fall_in_their_own_grid_cell(index: int) -> None:
    sample = render_plate(5, index, resolution=SMALL if index % 2 else (1700, 1200))
    cols = np.array(sample.calibration["columns"])
    rows = np.array(sample.calibration["rows"])
    assert len(cols) == 13 and len(rows) == 9
    assert np.all(np.diff(cols) > 0) and np.all(np.diff(rows) > 0)
    for well in sample.wells:
        x1, y1, x2, y2 = well["box"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert cols[well["col"]] < cx < cols[well["col"] + 1], well["well_id"]
        assert rows[well["row"]] < cy < rows[well["row"] + 1], well["well_id"]
        # The box is most of its cell, never more than the cell plus a little slack.
        cell_w = cols[well["col"] + 1] - cols[well["col"]]
        assert 0.6 * cell_w < x2 - x1 < 1.1 * cell_w


def test_calibration_is_in_the_old_systems_format(plate) -> None:
    cal = plate.calibration
    assert cal["format_version"] == 3
    assert (cal["image_width"], cal["image_height"]) == SMALL
    assert cal["bounds"] == {
        "left": cal["columns"][0],
        "right": cal["columns"][-1],
        "top": cal["rows"][0],
        "bottom": cal["rows"][-1],
    }


def test_calibration_loads_with_core(plate) -> None:
    grid = CalibrationGrid.from_legacy(plate.calibration)
    assert grid.plate_format.rows == 8 and grid.plate_format.cols == 12
    for well in plate.wells:
        assert grid.cell_at(*well["center"]) == (well["row"], well["col"])


def test_yolo_labels_are_normalised_and_match_boxes(plate) -> None:
    lines = yolo_lines(plate)
    assert len(lines) == 96
    for line, well in zip(lines, plate.wells, strict=True):
        cls, cx, cy, w, h = line.split()
        assert int(cls) == well["class_id"]
        values = [float(cx), float(cy), float(w), float(h)]
        assert all(0.0 < v < 1.0 for v in values)
        assert float(cx) * plate.width == pytest.approx(sum(well["box"][0::2]) / 2, abs=0.01)


def test_row_endpoints_follow_the_last_flowing_column(plate) -> None:
    by_row: dict[int, list[str]] = {}
    for well in plate.wells:
        by_row.setdefault(well["row"], [""] * 12)[well["col"]] = well["state"]
    for row in plate.rows:
        assert row["states"] == by_row[row["row"]]
        assert row["endpoint"] == true_endpoint(by_row[row["row"]])


def test_true_endpoint_rule() -> None:
    assert true_endpoint(["agglutinated"] * 12) == 0
    assert true_endpoint(["flowing"] * 12) == 12
    assert true_endpoint(["flowing", "agglutinated", "flowing", "invalid"]) == 3


def test_patterns_cover_the_titre_cases_and_invalid_kinds() -> None:
    rng = np.random.default_rng(0)
    endpoints: set[int] = set()
    kinds: set[str] = set()
    skipped = 0
    for _ in range(60):
        wells, rows = plate_pattern(rng)
        endpoints.update(r.pattern_endpoint for r in rows)
        kinds.update(w.kind for w in wells)
        skipped += sum(bool(r.skipped_cols) for r in rows)
    assert endpoints == set(range(13))
    assert kinds == {"button", "mat", "empty", "bubble", "debris"}
    assert skipped > 0


def test_cli_writes_a_yolo_dataset(tmp_path: Path) -> None:
    assert (
        synth_main(["--out", str(tmp_path), "--n", "2", "--seed", "3", "--val-fraction", "0.5"])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == [
        "plate_3_00000.jpg"
    ]
    assert sorted(p.name for p in (tmp_path / "images" / "val").iterdir()) == ["plate_3_00001.jpg"]
    label = (tmp_path / "labels" / "val" / "plate_3_00001.txt").read_text().splitlines()
    assert len(label) == 96
    truth = json.loads((tmp_path / "truth" / "plate_3_00001.json").read_text())
    assert truth["generator_version"] == GENERATOR_VERSION
    assert truth["image"] == "images/val/plate_3_00001.jpg"
    assert len(truth["wells"]) == 96 and len(truth["rows"]) == 8
    cal = json.loads((tmp_path / "calibration" / "plate_3_00001.json").read_text())
    assert cal["format_version"] == 3
    data = (tmp_path / "data.yaml").read_text()
    assert "val: images/val" in data and "2: invalid" in data


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        synth_main(["--out", str(tmp_path), "--n", "0"])
    assert exc.value.code == 2
    assert "--n must be at least 1" in capsys.readouterr().err

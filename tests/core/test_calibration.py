from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.calibration import CalibrationError, CalibrationGrid
from core.plate import PLATE_96, PLATE_384

REFERENCE = Path(__file__).parent / "data" / "roi_calibration.json"


@pytest.fixture
def legacy() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_reference_file_loads_unchanged() -> None:
    grid = CalibrationGrid.from_json(REFERENCE.read_text(encoding="utf-8"))
    assert grid.plate_format == PLATE_96
    assert (grid.image_width, grid.image_height) == (1700, 1200)
    assert grid.columns[0] == 106.0 and grid.columns[-1] == 1657.0
    assert grid.rows == (122.0, 255.0, 386.0, 508.0, 626.0, 759.0, 900.0, 1011.0, 1134.0)
    assert grid.updated_at is not None and grid.updated_at.year == 2025
    assert grid.updated_at.utcoffset() is not None


def test_legacy_round_trip(legacy: dict[str, Any]) -> None:
    grid = CalibrationGrid.from_legacy(legacy)
    back = grid.to_legacy()
    assert back["bounds"] == legacy["bounds"]
    assert back["columns"] == legacy["columns"] and back["rows"] == legacy["rows"]
    assert back["format_version"] == 3
    assert back["updated_at"] == legacy["updated_at"]
    assert CalibrationGrid.from_legacy(back) == grid


def test_own_form_round_trip(legacy: dict[str, Any]) -> None:
    grid = CalibrationGrid.from_legacy(legacy)
    text = grid.to_json()
    assert "bounds" not in json.loads(text)
    assert CalibrationGrid.from_json(text) == grid


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["columns"].__setitem__(4, 500.0),
            "columns[4] = 500.0 is not greater than columns[3] = 515.0",
        ),
        (
            lambda d: d["rows"].__setitem__(2, 255.0),
            "rows[2] = 255.0 is not greater than rows[1] = 255.0",
        ),
        (lambda d: d["columns"].pop(), "columns has 12 lines and rows has 9"),
        (lambda d: d["rows"].append(1190.0), "columns has 13 lines and rows has 10"),
        (
            lambda d: d.__setitem__("image_width", 1600),
            "columns[12] = 1657.0 lies outside the image",
        ),
        (lambda d: d["rows"].__setitem__(0, -3.0), "rows[0] = -3.0 lies outside the image"),
        (lambda d: d["columns"].__setitem__(1, "264"), "columns[1] = '264' is not a number"),
        (
            lambda d: d["columns"].__setitem__(1, float("nan")),
            "columns[1] = nan is not a finite number",
        ),
        (
            lambda d: d["columns"].__setitem__(12, float("inf")),
            "columns[12] = inf is not a finite number",
        ),
        (lambda d: d.__setitem__("format_version", 2), "format_version = 2 is not supported"),
        (lambda d: d.__setitem__("image_height", 0), "image_height = 0"),
        (
            lambda d: d.__setitem__("image_width", "1700"),
            "image_width = '1700' is not a whole number",
        ),
        (lambda d: d["bounds"].__setitem__("left", 90.0), "bounds.left = 90.0 disagrees"),
        (lambda d: d.__setitem__("colour", "red"), "unknown calibration field(s): colour"),
        (lambda d: d.pop("rows"), "no 'rows'"),
        (lambda d: d.__setitem__("updated_at", "yesterday"), "updated_at"),
    ],
)
def test_bad_calibration_names_the_value(legacy: dict[str, Any], mutate: Any, message: str) -> None:
    data = copy.deepcopy(legacy)
    mutate(data)
    with pytest.raises(CalibrationError) as info:
        CalibrationGrid.from_legacy(data)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"x"', "null"])
def test_from_json_rejects_non_objects(text: str) -> None:
    with pytest.raises(CalibrationError):
        CalibrationGrid.from_json(text)


def test_direct_construction_raises_calibration_error() -> None:
    with pytest.raises(CalibrationError, match="columns has 2 lines"):
        CalibrationGrid(columns=(1.0, 2.0), rows=(1.0, 2.0), image_width=10, image_height=10)
    with pytest.raises(CalibrationError, match="image_width"):
        CalibrationGrid(columns=(1.0,) * 13, rows=(1.0,) * 9, image_width=10.5, image_height=10)


def test_cell_at_uses_half_open_cells(legacy: dict[str, Any]) -> None:
    grid = CalibrationGrid.from_legacy(legacy)
    assert grid.cell_at(106.0, 122.0) == (0, 0)  # outer top-left corner is inside
    assert grid.cell_at(263.99, 254.99) == (0, 0)
    assert grid.cell_at(264.0, 200.0) == (0, 1)  # an inner line belongs to the right-hand well
    assert grid.cell_at(500.0, 255.0) == (1, 2)
    assert grid.cell_at(1657.0, 1134.0) == (7, 11)  # outer bottom-right edge too
    assert grid.cell_at(105.9, 500.0) is None
    assert grid.cell_at(500.0, 1134.1) is None
    assert grid.cell_at(float("nan"), 500.0) is None


def test_cell_box_and_lookup_agree(legacy: dict[str, Any]) -> None:
    grid = CalibrationGrid.from_legacy(legacy)
    for row in range(8):
        for col in range(12):
            x1, y1, x2, y2 = grid.cell_box(row, col)
            assert grid.cell_at((x1 + x2) / 2, (y1 + y2) / 2) == (row, col)
    assert grid.cell_box(1, 6) == (901.0, 255.0, 1014.0, 386.0)
    with pytest.raises(IndexError):
        grid.cell_box(8, 0)


def test_scaled_grid(legacy: dict[str, Any]) -> None:
    grid = CalibrationGrid.from_legacy(legacy)
    half = grid.scaled(850, 600)
    assert half.columns[1] == 132.0 and half.rows[-1] == 567.0
    assert (half.image_width, half.image_height) == (850, 600)
    assert half.grid_id != grid.grid_id
    assert half.scaled(1700, 1200).grid_id == grid.grid_id
    assert grid.scaled(1700, 1200) is grid
    # the same physical point lands in the same well
    assert half.cell_at(450.0, 300.0) == grid.cell_at(900.0, 600.0)
    with pytest.raises(CalibrationError):
        grid.scaled(0, 600)


def test_grid_id_is_stable_and_content_based(legacy: dict[str, Any]) -> None:
    a = CalibrationGrid.from_legacy(legacy)
    b = CalibrationGrid.from_legacy(copy.deepcopy(legacy) | {"updated_at": None})
    assert a.grid_id == b.grid_id and len(a.grid_id) == 64
    moved = copy.deepcopy(legacy)
    moved["columns"][5] = 764.0
    assert CalibrationGrid.from_legacy(moved).grid_id != a.grid_id


@pytest.mark.parametrize("fmt", [PLATE_96, PLATE_384])
def test_uniform_grid(fmt) -> None:
    grid = CalibrationGrid.uniform(1920, 1080, fmt)
    assert grid.plate_format == fmt
    assert math.isclose(grid.columns[0], 1920 * 0.03) and math.isclose(grid.rows[-1], 1080 * 0.97)
    with pytest.raises(CalibrationError, match="margin_frac"):
        CalibrationGrid.uniform(1920, 1080, fmt, margin_frac=0.5)


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(min_value=-100, max_value=2000, allow_nan=False),
    y=st.floats(min_value=-100, max_value=1300, allow_nan=False),
)
def test_every_point_inside_the_grid_is_in_exactly_its_box(x: float, y: float) -> None:
    grid = CalibrationGrid.from_json(REFERENCE.read_text(encoding="utf-8"))
    cell = grid.cell_at(x, y)
    inside = grid.columns[0] <= x <= grid.columns[-1] and grid.rows[0] <= y <= grid.rows[-1]
    assert (cell is not None) == inside
    if cell is not None:
        x1, y1, x2, y2 = grid.cell_box(*cell)
        assert x1 <= x <= x2 and y1 <= y <= y2


@settings(max_examples=100, deadline=None)
@given(w=st.integers(min_value=64, max_value=8000), h=st.integers(min_value=64, max_value=8000))
def test_scaling_keeps_a_valid_grid(w: int, h: int) -> None:
    grid = CalibrationGrid.from_json(REFERENCE.read_text(encoding="utf-8")).scaled(w, h)
    assert grid.plate_format == PLATE_96
    assert all(b > a for a, b in zip(grid.columns, grid.columns[1:], strict=False))
    assert grid.columns[-1] <= w and grid.rows[-1] <= h

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.calibration import CalibrationGrid
from core.detection import Detection
from core.plate import PLATE_96, PLATE_384
from core.wells import ClassMap, ClassMapError, call_wells, outside_grid
from tests.core.helpers import det_in

GRID = CalibrationGrid.uniform(1200, 800, PLATE_96, margin_frac=0.0)  # 100 × 100 px wells


def test_detection_validation_and_centre() -> None:
    d = Detection(x1=10, y1=20, x2=30, y2=60, confidence=0.5, class_id=1, class_name="Flowing")
    assert d.center == (20.0, 40.0) and d.box == (10.0, 20.0, 30.0, 60.0) and d.area == 800.0
    with pytest.raises(ValidationError, match="left of"):
        Detection(x1=30, y1=0, x2=10, y2=1, confidence=0.5, class_id=0, class_name="x")
    with pytest.raises(ValidationError):
        Detection(x1=0, y1=0, x2=1, y2=1, confidence=1.5, class_id=0, class_name="x")
    with pytest.raises(ValidationError):
        Detection(x1=float("nan"), y1=0, x2=1, y2=1, confidence=0.5, class_id=0, class_name="x")


def test_every_well_present_in_plate_order() -> None:
    calls = call_wells([], GRID)
    assert list(calls) == PLATE_96.well_ids()
    assert all(c.state == "unread" and c.confidence is None for c in calls.values())
    big = call_wells([], CalibrationGrid.uniform(2400, 1600, PLATE_384))
    assert list(big) == PLATE_384.well_ids()


def test_box_centre_rule_keeps_boxes_that_cross_a_line() -> None:
    # a 120 px box centred 30 px right of B2's centre crosses into B3 but its centre is in B2
    wide = det_in(GRID, 1, 1, "Flowing", 0.8, dx=30.0, half=60.0)
    calls = call_wells([wide], GRID)
    assert calls["B2"].state == "flowing"
    assert calls["B2"].box == wide.box and calls["B2"].n_detections == 1
    assert calls["B3"].state == "unread"


def test_class_names_map_case_insensitively() -> None:
    names = [
        "Flowing",
        "tear-drop",
        "STREAMING",
        "mat",
        "Shield",
        "Agglutinated",
        "bubble",
        "Debris",
    ]
    dets = [det_in(GRID, 0, c, name) for c, name in enumerate(names)]
    states = [call_wells(dets, GRID)[f"A{c + 1}"].state for c in range(len(names))]
    assert states == ["flowing"] * 3 + ["agglutinated"] * 3 + ["invalid"] * 2


def test_highest_confidence_decides_and_flags_multiple() -> None:
    dets = [det_in(GRID, 2, 3, "mat", 0.7), det_in(GRID, 2, 3, "Flowing", 0.9, dx=5)]
    call = call_wells(dets, GRID)["C4"]
    assert call.state == "flowing" and call.confidence == 0.9
    assert call.flags == ("multiple",) and call.n_detections == 2


def test_low_confidence_is_unread_never_guessed() -> None:
    call = call_wells([det_in(GRID, 0, 0, "Flowing", 0.3)], GRID, min_confidence=0.5)["A1"]
    assert call.state == "unread" and call.flags == ("low_confidence",)
    assert call.class_name == "Flowing" and call.confidence == 0.3  # kept for display
    ok = call_wells([det_in(GRID, 0, 0, "Flowing", 0.5)], GRID, min_confidence=0.5)["A1"]
    assert ok.state == "flowing" and ok.flags == ()


def test_multiple_and_low_confidence_together() -> None:
    dets = [det_in(GRID, 0, 0, "Flowing", 0.2), det_in(GRID, 0, 0, "mat", 0.1, dx=3)]
    call = call_wells(dets, GRID, min_confidence=0.5)["A1"]
    assert call.state == "unread" and set(call.flags) == {"multiple", "low_confidence"}


def test_detections_outside_the_grid_are_reported() -> None:
    grid = CalibrationGrid.uniform(1200, 800, PLATE_96)
    stray = Detection(x1=0, y1=0, x2=10, y2=10, confidence=0.9, class_id=0, class_name="Flowing")
    calls = call_wells([stray], grid)
    assert all(c.state == "unread" for c in calls.values())
    assert outside_grid([stray, det_in(grid, 0, 0)], grid) == [stray]


def test_unknown_class_is_an_error() -> None:
    with pytest.raises(ClassMapError, match="'halo'"):
        call_wells([det_in(GRID, 0, 0, "halo")], GRID)
    with pytest.raises(ClassMapError, match="'halo', 'ring'"):
        ClassMap.for_model(["Flowing", "halo", "ring"])
    cmap = ClassMap.for_model(["Flowing", "Halo"], extra={"halo": "invalid"})
    assert call_wells([det_in(GRID, 0, 0, "HALO")], GRID, class_map=cmap)["A1"].state == "invalid"
    with pytest.raises(ValidationError):
        ClassMap(names={"x": "unread"})  # type: ignore[dict-item]


def test_min_confidence_range() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        call_wells([], GRID, min_confidence=1.5)


@settings(max_examples=100, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.integers(0, 7),
            st.integers(0, 11),
            st.sampled_from(["Flowing", "mat", "bubble"]),
            st.floats(0.0, 1.0),
        ),
        max_size=40,
    ),
    seed=st.integers(0, 2**16),
)
def test_calls_do_not_depend_on_detection_order(picks, seed: int) -> None:
    dets = [det_in(GRID, r, c, name, conf) for r, c, name, conf in picks]
    shuffled = list(dets)
    random.Random(seed).shuffle(shuffled)
    first, second = call_wells(dets, GRID), call_wells(shuffled, GRID)
    assert first == second
    for r, c, _, _ in picks:
        call = first[PLATE_96.well_id(r, c)]
        in_well = [d for d in dets if GRID.cell_at(*d.center) == (r, c)]
        assert call.n_detections == len(in_well)
        assert call.confidence == max(d.confidence for d in in_well)
        assert ("multiple" in call.flags) == (len(in_well) > 1)


def test_class_map_refuses_conflicts_and_empty_names() -> None:
    with pytest.raises(ValidationError, match="maps to both"):
        ClassMap(names={"Mat": "agglutinated", "mat": "flowing"})
    with pytest.raises(ValidationError, match="empty"):
        ClassMap(names={" ": "invalid"})

"""Generator v2 (both reading modes) and the well-crop datasets cut from it."""

from __future__ import annotations

import numpy as np
import pytest

from core.calibration import CalibrationGrid
from edge.detect.wellcrops import well_boxes
from models.synth.look import READING_MODES
from models.synth.patterns import CLASSES as STATES
from models.synth.render2 import render_plate_v2
from models.wells.dataset import (
    CLASS_ID,
    CLASSES,
    NOWELL,
    clutter_crops,
    plate_crops,
    shifted_boxes,
)


@pytest.fixture(scope="module", params=READING_MODES)
def plate(request: pytest.FixtureRequest):
    return render_plate_v2(21, 0, mode=request.param, pitch_px=48)


def test_same_seed_index_and_mode_give_the_same_bytes(plate) -> None:
    mode = plate.variations["reading"]
    again = render_plate_v2(21, 0, mode=mode, pitch_px=48)
    assert again.jpeg == plate.jpeg and again.wells == plate.wells
    other = render_plate_v2(21, 1, mode=mode, pitch_px=48)
    assert other.jpeg != plate.jpeg


def test_both_modes_are_drawn_and_recorded() -> None:
    tilted = render_plate_v2(21, 2, mode="tilted", pitch_px=44)
    untilted = render_plate_v2(21, 2, mode="untilted", pitch_px=44)
    assert tilted.variations["reading"] == "tilted"
    assert untilted.variations["reading"] == "untilted"
    # Same stream position, other mode: other pixels, and kinds that belong to the mode.
    assert tilted.jpeg != untilted.jpeg
    assert {w["kind"] for w in tilted.wells if w["state"] == "flowing"} <= {"teardrop"}
    assert {w["kind"] for w in untilted.wells if w["state"] == "flowing"} <= {"button"}
    with pytest.raises(ValueError, match="reading mode"):
        render_plate_v2(21, 2, mode="sideways")


@pytest.mark.parametrize("index", range(4))
def test_well_centres_sit_in_their_cells_and_wells_are_40_to_150_px(index: int) -> None:
    sample = render_plate_v2(22, index)
    grid = CalibrationGrid.from_legacy(sample.calibration)
    assert (grid.image_width, grid.image_height) == (sample.width, sample.height)
    pitch = sample.variations["pitch_px"]
    assert 40 <= pitch <= 150
    for well in sample.wells:
        assert well["state"] in STATES
        x, y = well["center"]
        assert grid.cell_at(x, y) == (well["row"], well["col"]), well["well_id"]
        # Within a fifth of a pitch of the cell centre: a crop through the grid holds the well.
        x0, y0, x1, y1 = grid.cell_box(well["row"], well["col"])
        assert abs(x - (x0 + x1) / 2) < 0.2 * pitch and abs(y - (y0 + y1) / 2) < 0.2 * pitch


def test_rows_follow_the_product_endpoint_rule(plate) -> None:
    for row in plate.rows:
        states = [w["state"] for w in plate.wells if w["row"] == row["row"]]
        assert states == row["states"]
        flowing = [i for i, s in enumerate(states, start=1) if s == "flowing"]
        assert row["endpoint"] == (flowing[-1] if flowing else 0)


def test_plate_crops_label_the_wells_and_the_misses(plate) -> None:
    grid = CalibrationGrid.from_legacy(plate.calibration)
    states = [w["state"] for w in plate.wells]
    rng = np.random.default_rng(0)
    crops = plate_crops(
        plate.image, grid, states, rng, size=32, scale=1.0, n_jitter=10, n_shifted=12
    )
    assert crops.x.shape == (96 + 10 + 12, 3, 32, 32) and crops.x.dtype == np.uint8
    assert [CLASSES[k] for k in crops.y[:96]] == states
    assert set(crops.y[96:106].tolist()) <= {CLASS_ID[s] for s in states}
    assert (crops.y[106:] == NOWELL).all()


def test_shifted_boxes_are_at_least_a_quarter_pitch_from_every_well(plate) -> None:
    grid = CalibrationGrid.from_legacy(plate.calibration)
    boxes = well_boxes(grid)
    centres = np.array([(b[0], b[1]) for b in boxes])
    pitch = float(np.median([b[2] for b in boxes]))
    for cx, cy, _ in shifted_boxes(boxes, pitch, np.random.default_rng(1), 200):
        nearest = np.min(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy))
        assert nearest >= 0.25 * pitch


def test_clutter_crops_are_all_nowell() -> None:
    crops = clutter_crops(np.random.default_rng(3), size=32, scale=1.0)
    assert crops.x.shape == (96, 3, 32, 32)
    assert (crops.y == NOWELL).all()


def test_bundled_samples_come_from_generator_v2_in_both_modes() -> None:
    import json
    from pathlib import Path

    from models.synth.render2 import GENERATOR_V2_VERSION

    folder = Path(__file__).resolve().parents[2] / "models" / "samples"
    index = json.loads((folder / "index.json").read_text())
    assert sorted(e["reading"] for e in index) == ["tilted"] * 3 + ["untilted"] * 3
    for entry in index:
        assert (folder / entry["image"]).stat().st_size <= 250_000
        truth = json.loads((folder / entry["truth"]).read_text())
        assert truth["generator_version"] == GENERATOR_V2_VERSION
        assert truth["reading"] == entry["reading"] == truth["variations"]["reading"]
        grid = CalibrationGrid.from_json((folder / entry["calibration"]).read_text())
        assert f"{grid.image_width}x{grid.image_height}" == entry["size"]
        assert len(truth["wells"]) == 96 and len(truth["rows"]) == 8


def _marked_share(kind: str, seed: int) -> float:
    """Share of a well floor that a drawer darkens, on a plate whose cells are invisible (so only
    the mark itself changes pixels)."""
    from dataclasses import replace

    from models.synth import wells2
    from models.synth.look import sample_look

    rng = np.random.default_rng(seed)
    look = replace(
        sample_look(rng, "untilted"),
        cells_dark=np.ones(3, np.float32),
        cells_mat=np.ones(3, np.float32),
    )
    r_px = 30.0
    ys, xs = np.mgrid[0:80, 0:80].astype(np.float32)
    u, v = (xs + 0.5 - 40.3) / r_px, (ys + 0.5 - 39.6) / r_px
    px = 1.0 / r_px
    floor = wells2._inside(0.97 - np.sqrt(u * u + v * v), 2 * px)
    patch = np.full((80, 80, 3), 200.0, np.float32)
    if kind == "speck":
        wells2._speck(patch, u, v, px, floor, rng)
    else:
        wells2._DRAWERS[kind](patch, u, v, px, floor, look, rng)
    dark = patch.min(axis=2) < 200.0 * 0.95
    inside = floor > 0.99
    return float((dark & inside).sum() / inside.sum())


@pytest.mark.parametrize("kind", ["pen", "debris"])
def test_invalid_marks_hide_the_floor(kind: str) -> None:
    # A pen mark or debris labelled invalid must really obscure the well, not leave it readable.
    shares = [_marked_share(kind, seed) for seed in range(40)]
    assert min(shares) >= 0.08, shares


def test_specks_on_readable_wells_stay_small() -> None:
    shares = [_marked_share("speck", seed) for seed in range(40)]
    assert max(shares) <= 0.05 and max(shares) > 0.0, shares


def _button_centre(shift: tuple[float, float], seed: int = 5) -> tuple[np.ndarray, float]:
    """Where a drawn untilted button's red cells sit (x, y px), and the share of the opening
    that the wall covers, for a well drawn at the centre of a plain canvas with ``shift``."""
    from dataclasses import replace

    from models.synth import wells2
    from models.synth.look import sample_look

    look = replace(
        sample_look(np.random.default_rng(seed), "untilted"),
        wall_tone=0.5,
        tip_glint=0.0,
        glare_rate=0.0,
        liquid_alpha=0.0,
        cells_dark=np.array([0.1, 0.1, 0.9], np.float32),  # BGR: red cells
    )
    canvas = np.full((120, 120, 3), 120.0, np.float32)
    wells2.draw_well(
        canvas, 60.0, 60.0, 40.0, "flowing", "button", look, np.random.default_rng(9), shift
    )
    red = (canvas[..., 2] - canvas[..., 1]) > 40  # where the cells absorb blue and green
    ys, xs = np.nonzero(red)
    return np.array([xs.mean(), ys.mean()]), float(red.sum())


def test_parallax_moves_the_floor_and_what_lies_on_it() -> None:
    # The camera sees a well's floor displaced (towards the point under the lens): the button on
    # it moves with it, by the shift times the wall's outer radius (40 px here).
    centre, _ = _button_centre((0.0, 0.0))
    moved, _ = _button_centre((0.3, -0.2))
    assert moved - centre == pytest.approx([0.3 * 40, -0.2 * 40], abs=2.5)
    # A shift past the opening is capped, so some floor stays in view.
    far, area = _button_centre((3.0, 0.0))
    assert area > 0 and far[0] - centre[0] < 40


def test_parallax_is_drawn_per_plate_and_changes_nothing_else() -> None:
    plates = [render_plate_v2(61, i, mode="tilted") for i in range(8)]
    ks = [p.variations["parallax"] for p in plates]
    assert min(ks) >= 0.0 and max(ks) <= 0.05 and any(k > 0.01 for k in ks)
    plate = next(p for p in plates if p.variations["parallax"] > 0.01)
    index = plates.index(plate)
    flat = render_plate_v2(61, index, mode="tilted", parallax=False)
    assert flat.variations["parallax"] == 0.0
    assert flat.wells == plate.wells and flat.rows == plate.rows
    assert flat.calibration == plate.calibration
    assert not np.array_equal(flat.image, plate.image)

"""The crop contract shared by training, evaluation and the appliance."""

from __future__ import annotations

import numpy as np
import pytest

from core.calibration import CalibrationGrid
from core.plate import PLATE_96
from edge.detect.wellcrops import crop_wells, well_centres


def test_crops_are_row_major_rgb_and_centred() -> None:
    grid = CalibrationGrid.uniform(1200, 800, PLATE_96)
    image = np.zeros((800, 1200, 3), dtype=np.uint8)
    centres = well_centres(grid)
    # A red (BGR) dot at the centre of B3 only.
    x, y = centres[1, 2]
    image[int(y) - 5 : int(y) + 5, int(x) - 5 : int(x) + 5] = (0, 0, 255)
    batch = crop_wells(image, grid, size=32)
    assert batch.shape == (96, 3, 32, 32) and batch.dtype == np.float32
    red = batch[:, 0].sum(axis=(1, 2))
    assert int(np.argmax(red)) == 12 + 2
    assert batch[14, 0, 16, 16] == pytest.approx(1.0) and batch[14, 2, 16, 16] == 0.0
    assert red[np.arange(96) != 14].max() == 0.0


def test_grid_is_scaled_to_the_image_and_edges_replicate() -> None:
    grid = CalibrationGrid.uniform(600, 400, PLATE_96, margin_frac=0.0)
    image = np.full((800, 1200, 3), 200, dtype=np.uint8)
    batch = crop_wells(image, grid, size=24, scale=2.0)
    assert batch.shape == (96, 3, 24, 24)
    assert np.allclose(batch, 200 / 255)


def test_mirrored_batch_and_its_average() -> None:
    from edge.detect.wellcrops import average_mirrors, with_mirrors

    rng = np.random.default_rng(3)
    crops = rng.random((5, 3, 8, 8), dtype=np.float32)
    both = with_mirrors(crops)
    assert both.shape == (10, 3, 8, 8) and both.flags.c_contiguous
    assert np.array_equal(both[:5], crops)
    assert np.array_equal(both[5:, :, :, 0], crops[:, :, :, 7])  # left-right, not up-down
    assert np.array_equal(both[5:, :, 0, :], crops[:, :, 0, ::-1])
    probs = np.concatenate([np.eye(4)[[0, 1, 2, 3, 0]], np.eye(4)[[1, 1, 2, 0, 0]]])
    mean = average_mirrors(probs)
    assert mean.shape == (5, 4)
    assert mean[0].tolist() == [0.5, 0.5, 0.0, 0.0] and mean[1].tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2N"):
        average_mirrors(probs[:9])
    with pytest.raises(ValueError, match="N, C, H, W"):
        with_mirrors(crops[0])


def test_a_wells_confidence_given_that_it_holds_a_well() -> None:
    from edge.detect.wellcrops import given_a_well

    classes = ("flowing", "agglutinated", "invalid", "nowell")
    probs = np.array(
        [
            [0.44, 0.10, 0.22, 0.24],  # a well: nowell's share set aside -> flowing 0.58
            [0.05, 0.10, 0.15, 0.70],  # no well in the crop: left as it is
            [0.30, 0.30, 0.10, 0.30],  # a tie with nowell: argmax is flowing, so a well
            [1.00, 0.00, 0.00, 0.00],
        ],
        np.float32,
    )
    out = given_a_well(probs, classes)
    assert out[0] == pytest.approx([0.44 / 0.76, 0.10 / 0.76, 0.22 / 0.76, 0.0])
    assert out[1].tolist() == probs[1].tolist()
    assert out[2] == pytest.approx([3 / 7, 3 / 7, 1 / 7, 0.0])
    assert out[3].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert np.array_equal(out.argmax(1), probs.argmax(1))  # the state never changes
    assert np.allclose(out.sum(1), 1.0) and probs[0, 3] == pytest.approx(0.24)  # a copy
    # A model without a nowell class reads as it is; a shape that does not fit is an error.
    three = probs[:, :3] / probs[:, :3].sum(1, keepdims=True)
    assert given_a_well(three, classes[:3]) is three
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        given_a_well(probs[:, :3], classes)

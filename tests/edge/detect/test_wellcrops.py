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
